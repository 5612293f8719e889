package firewall

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/pvelb/pvelb/provider/pve"
)

// Desired is everything the firewall should admit, across all Proxmox clusters.
type Desired struct {
	// VIPs are all allocated VIPs with the Services holding them. Every
	// region's cluster-level set lists all of them.
	VIPs []VIP
	// VMs are the VMs whose ipfilter sets pvelb manages: normally the VMs of
	// all Nodes, each with the VIPs its Node may announce (none for a Node that
	// may announce nothing, so that pvelb's entries are removed from it).
	VMs []VM
	// Ranges are the pools' address ranges, used in admit-ranges mode: a
	// range is admitted in a set as soon as one of that set's VIPs lies in it.
	// VIPs outside every range are admitted one by one.
	Ranges []PoolRange
}

// VIP is one allocated address and the Services ("namespace/name") holding it;
// several Services may share one address.
type VIP struct {
	Addr     netip.Addr
	Services []string
}

// VM is one Proxmox VM backing a Kubernetes Node.
type VM struct {
	// Region is the Proxmox cluster (cloud-config clusters[].region).
	Region string
	Ref    pve.VMRef
	// Name is the VM's name, when known (for messages).
	Name string
	// Node is the Kubernetes Node name (for messages).
	Node string
	// Addresses are the VM's own addresses (Node addresses, guest agent). They
	// are seeded into an ipfilter set pvelb has to create.
	Addresses []netip.Addr
	// VIPs are the VIPs this VM's Node may announce; each must be in Desired.VIPs.
	VIPs []netip.Addr
}

// PoolRange is one address range of an IPPool.
type PoolRange struct {
	Pool        string
	First, Last netip.Addr
}

type vmKey struct {
	region string
	ref    pve.VMRef
}

// hasVMID reports whether the desired state holds k's VM id in k's region,
// on any host. Proxmox keeps a VM's firewall in one file per VM id (the host
// in the path does not matter), so a VM that was live-migrated is the same
// firewall under a new host: its old place is not a retired VM to clean, or
// the cleanup would strip the VIPs the VM still announces.
func (n *normalized) hasVMID(k vmKey) bool {
	if _, ok := n.vms[k]; ok {
		return true
	}
	for d := range n.vms {
		if d.region == k.region && d.ref.VMID == k.ref.VMID {
			return true
		}
	}
	return false
}

// normalized is a validated Desired with lookups built.
type normalized struct {
	vips   []netip.Addr            // sorted
	owners map[netip.Addr][]string // sorted, unique
	vms    map[vmKey]VM
	ranges []PoolRange
}

// Validate checks d and names the offending field.
func (d Desired) Validate() error {
	_, err := normalize(d)
	return err
}

func normalize(d Desired) (*normalized, error) {
	n := &normalized{owners: map[netip.Addr][]string{}, vms: map[vmKey]VM{}}
	for i, v := range d.VIPs {
		a := v.Addr.Unmap()
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() {
			return nil, fmt.Errorf("vips[%d].addr: %q is not a usable IP address", i, v.Addr)
		}
		for j, s := range v.Services {
			if s == "" {
				return nil, fmt.Errorf("vips[%d].services[%d]: must be namespace/name, not empty", i, j)
			}
		}
		if _, dup := n.owners[a]; !dup {
			n.vips = append(n.vips, a)
		}
		// The same address listed twice is a shared IP: merge its owners.
		n.owners[a] = sortedUnique(append(n.owners[a], v.Services...))
	}
	slices.SortFunc(n.vips, netip.Addr.Compare)

	for i, vm := range d.VMs {
		if vm.Region == "" {
			return nil, fmt.Errorf("vms[%d].region: must not be empty", i)
		}
		if vm.Ref.Node == "" {
			return nil, fmt.Errorf("vms[%d].ref.node: must not be empty", i)
		}
		if vm.Ref.VMID < 100 {
			return nil, fmt.Errorf("vms[%d].ref.vmid: %d is not a Proxmox VM id (100 or more)", i, vm.Ref.VMID)
		}
		k := vmKey{vm.Region, vm.Ref}
		if _, dup := n.vms[k]; dup {
			return nil, fmt.Errorf("vms[%d]: VM %d on %s in region %s is listed twice", i, vm.Ref.VMID, vm.Ref.Node, vm.Region)
		}
		vips := make([]netip.Addr, 0, len(vm.VIPs))
		for j, a := range vm.VIPs {
			a = a.Unmap()
			if _, ok := n.owners[a]; !ok {
				return nil, fmt.Errorf("vms[%d].vips[%d]: %s is not among vips", i, j, a)
			}
			vips = append(vips, a)
		}
		slices.SortFunc(vips, netip.Addr.Compare)
		vm.VIPs = slices.Compact(vips)
		for j, a := range vm.Addresses {
			if !a.IsValid() {
				return nil, fmt.Errorf("vms[%d].addresses[%d]: not a valid IP address", i, j)
			}
		}
		vm.Addresses = uniqueAddrs(vm.Addresses)
		n.vms[k] = vm
	}

	for i, r := range d.Ranges {
		if r.Pool == "" {
			return nil, fmt.Errorf("ranges[%d].pool: must not be empty", i)
		}
		if RangeToCIDRs(r.First, r.Last) == nil {
			return nil, fmt.Errorf("ranges[%d]: %s-%s is not a range (same family, first <= last)", i, r.First, r.Last)
		}
		r.First, r.Last = r.First.Unmap(), r.Last.Unmap()
		n.ranges = append(n.ranges, r)
	}
	return n, nil
}

// wants is what a set holding vips should contain: one entry per VIP, or in
// admit-ranges mode the minimal CIDRs of every range holding one of the VIPs
// (and single entries for VIPs outside every range).
func (n *normalized) wants(vips []netip.Addr, admitRanges bool) []Want {
	var out []Want
	if !admitRanges || len(n.ranges) == 0 {
		for _, a := range vips {
			out = append(out, Want{Prefix: hostPrefix(a), Comment: ServicesComment(n.owners[a])})
		}
		return out
	}
	used := make([]bool, len(n.ranges))
	for _, a := range vips {
		inRange := false
		for i, r := range n.ranges {
			if r.First.Is4() == a.Is4() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0 {
				used[i], inRange = true, true
			}
		}
		if !inRange {
			out = append(out, Want{Prefix: hostPrefix(a), Comment: ServicesComment(n.owners[a])})
		}
	}
	// Two pools could produce the same CIDR only if they overlap (which the
	// pool controller refuses); merge their names rather than trust that.
	pools := map[netip.Prefix][]string{}
	var order []netip.Prefix
	for i, r := range n.ranges {
		if !used[i] {
			continue
		}
		for _, p := range proxmoxPrefixes(RangeToCIDRs(r.First, r.Last)) {
			if _, seen := pools[p]; !seen {
				order = append(order, p)
			}
			pools[p] = append(pools[p], r.Pool)
		}
	}
	for _, p := range order {
		out = append(out, Want{Prefix: p, Comment: PoolsComment(pools[p])})
	}
	return out
}

// services returns the Services owning any of vips.
func (n *normalized) services(vips []netip.Addr) []string {
	var out []string
	for _, a := range vips {
		out = append(out, n.owners[a]...)
	}
	return sortedUnique(out)
}
