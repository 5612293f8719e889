package loadbalancer

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/provider/config"
)

// serviceVIPs is one Service's allocated addresses and the pool of each
// (Pools[i] is "" for an address outside every current pool: it keeps being
// served, announced from every eligible node).
type serviceVIPs struct {
	Key   string
	Addrs []netip.Addr
	Pools []string
}

// poolView is what the firewall wiring needs of an IPPool.
type poolView struct {
	Name     string
	Selector labels.Selector // announce.nodeSelector; nil selects every node
	Ranges   []firewall.PoolRange
}

// desiredInput is everything the firewall's desired state is computed from.
type desiredInput struct {
	Services []serviceVIPs
	Pools    map[string]poolView
	Nodes    []*v1.Node
	// VMs maps Node names to their VMs; Nodes without a known VM are left out
	// (their providerID is not set yet or names no VM pvelb can see).
	VMs map[string]vmLocation
	// FirewallOff: pvelb does not manage the Proxmox firewall, so a Node may
	// announce whether or not its VM was located.
	FirewallOff bool
	// Extra are the cloud config's firewall.extraAddresses: admitted in the
	// VMs of the Nodes their selector selects, and listed with the VIPs.
	Extra []config.ExtraAddress
}

// buildDesired computes the firewall's desired state: every VIP in the
// cluster-level set, and on every known VM the VIPs its Node may announce
// (eligibility.ForPool: the pool's node selector and the service controller's
// node predicates, the rule the announcer applies too). It also returns, per
// Service, why no node may announce one of its addresses.
func buildDesired(in desiredInput) (firewall.Desired, map[string]string) {
	var d firewall.Desired
	selections := map[string]NodeSelection{}
	var located func(*v1.Node) bool
	if !in.FirewallOff {
		located = func(n *v1.Node) bool { _, ok := in.VMs[n.Name]; return ok }
	}
	selection := func(pool string) NodeSelection {
		if s, ok := selections[pool]; ok {
			return s
		}
		var sel labels.Selector
		if p, ok := in.Pools[pool]; ok {
			sel = p.Selector
		}
		s := SelectNodes(in.Nodes, sel, located)
		selections[pool] = s
		return s
	}

	vmIndex := map[string]int{}
	for _, n := range in.Nodes {
		loc, ok := in.VMs[n.Name]
		if !ok {
			continue
		}
		vmIndex[n.Name] = len(d.VMs)
		d.VMs = append(d.VMs, firewall.VM{
			Region: loc.Region, Ref: loc.Ref, Name: loc.Name, Node: n.Name,
			Addresses: nodeAddrs(n),
		})
	}

	owners := map[netip.Addr][]string{}
	var order []netip.Addr
	// admitted dedups a VM's VIPs (an address Services share comes once)
	// without scanning its list: Services x Nodes stays linear.
	type vmVIP struct {
		vm int
		ip netip.Addr
	}
	admitted := map[vmVIP]bool{}
	problems := map[string]string{}
	for _, s := range in.Services {
		for i, a := range s.Addrs {
			if _, seen := owners[a]; !seen {
				order = append(order, a)
			}
			owners[a] = append(owners[a], s.Key)
			pool := ""
			if i < len(s.Pools) {
				pool = s.Pools[i]
			}
			sel := selection(pool)
			if msg := sel.NoEligibleNodeMessage(pool); msg != "" {
				problems[s.Key] = msg
			}
			for _, n := range sel.Eligible {
				if j, ok := vmIndex[n.Name]; ok && !admitted[vmVIP{j, a}] {
					admitted[vmVIP{j, a}] = true
					d.VMs[j].VIPs = append(d.VMs[j].VIPs, a)
				}
			}
		}
	}
	// Extra addresses (Talos's control-plane VIP, ...) are sent by the VMs
	// themselves, not announced by pvelb: the Nodes their selector picks admit
	// them, whatever the load-balancer predicates (Talos excludes its
	// control plane from load balancers) and whether or not they are Ready.
	for _, e := range in.Extra {
		owner := config.ExtraOwnerPrefix + e.Name
		for _, a := range e.Addresses {
			if _, seen := owners[a]; !seen {
				order = append(order, a)
			}
			owners[a] = append(owners[a], owner)
			for _, n := range in.Nodes {
				if e.NodeSelector != nil && !e.NodeSelector.Matches(labels.Set(n.Labels)) {
					continue
				}
				if j, ok := vmIndex[n.Name]; ok && !admitted[vmVIP{j, a}] {
					admitted[vmVIP{j, a}] = true
					d.VMs[j].VIPs = append(d.VMs[j].VIPs, a)
				}
			}
		}
	}
	for _, a := range order {
		d.VIPs = append(d.VIPs, firewall.VIP{Addr: a, Services: owners[a]})
	}
	for _, name := range sortedKeys(in.Pools) {
		d.Ranges = append(d.Ranges, in.Pools[name].Ranges...)
	}
	return d, problems
}

// nodeAddrs are a Node's own IP addresses, seeded into an ipfilter set pvelb
// must create so that the VM keeps its own traffic.
func nodeAddrs(n *v1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
