package pvesim

import (
	"maps"
	"strconv"

	"github.com/pvelb/pvelb/provider/pve"
)

// FirewallState is a copy of what a Proxmox host's firewall daemon
// (pve-firewall or proxmox-firewall) reads on each pass: the datacenter
// firewall's options (cluster.fw) and, for every VM, the netN lines of its
// config and its own firewall file (<vmid>.fw: options and IPSets). It shares
// nothing with the server, so a caller may keep and change it.
type FirewallState struct {
	// ClusterOptions are cluster.fw's options as stored ("enable": "1").
	ClusterOptions map[string]string
	// VMs are sorted by VMID.
	VMs []FirewallVM
}

// FirewallVM is one VM's part of a FirewallState.
type FirewallVM struct {
	VMID   int
	Node   string
	Status string         // as VM.Status: "running", "stopped" or "paused"
	Nets   map[int]string // netN index -> raw value, as in the VM config
	// Options are the VM firewall options as stored: booleans "0"/"1",
	// absent when never set (Proxmox then applies the option's default).
	Options map[string]string
	// IPSets maps each set's (lowercase) name to its entries, sorted as
	// Proxmox lists them.
	IPSets map[string][]pve.IPSetEntry
}

// DatacenterEnabled reports whether the datacenter firewall is on: without
// it neither daemon installs any rule, whatever the VMs say (off by default,
// as in a fresh cluster.fw).
func (st FirewallState) DatacenterEnabled() bool { return st.ClusterOptions["enable"] == "1" }

// FirewallSnapshot returns the firewall state in one consistent copy, taken
// under the server's lock, so a firewall emulator can read it while API
// writes go on; it never goes through HTTP, so it does not count in Stats
// and no Fault applies to it.
func (s *Server) FirewallSnapshot() FirewallState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := FirewallState{ClusterOptions: map[string]string{}}
	if fw := s.firewalls[clusterKey]; fw != nil {
		st.ClusterOptions = maps.Clone(fw.options)
	}
	for _, vm := range s.sortedVMsLocked() {
		fv := FirewallVM{VMID: vm.VMID, Node: vm.Node, Status: vm.Status, Nets: maps.Clone(vm.Nets),
			Options: map[string]string{}, IPSets: map[string][]pve.IPSetEntry{}}
		if fw := s.firewalls[vm.VMID]; fw != nil {
			fv.Options = maps.Clone(fw.options)
			for name, set := range fw.ipsets {
				entries := make([]pve.IPSetEntry, 0, len(set.entries))
				for _, e := range set.entries {
					entries = append(entries, pve.IPSetEntry{CIDR: e.cidr, Comment: e.comment, NoMatch: e.nomatch})
				}
				fv.IPSets[name] = entries
			}
		}
		st.VMs = append(st.VMs, fv)
	}
	return st
}

// SetClusterFirewall turns the datacenter firewall on or off (cluster.fw
// option enable), as an administrator would under Datacenter > Firewall.
func (s *Server) SetClusterFirewall(enable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.firewallLocked(clusterKey).options["enable"] = strconv.Itoa(b2i(enable))
}
