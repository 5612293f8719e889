package pvesim

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pvelb/pvelb/provider/pve"
	"sigs.k8s.io/yaml"
)

// State is a simulator's starting state, read from a YAML or JSON file by
// the standalone pvesim binary:
//
//	tokens:
//	  - id: pvelb@pve!ccm
//	    secretFile: token.secret        # or secret: "..."
//	    privileges: [VM.Audit, VM.Config.Network, Sys.Audit, Sys.Modify]  # omit for all
//	vms:
//	  - {vmid: 100, node: pve1, name: talos-cp-1, uuid: ..., sku: ..., cores: 2, memoryMiB: 4096,
//	     nets: {net0: "virtio=BC:24:11:AA:BB:01,bridge=vmbr0,firewall=1"}, status: running,
//	     agent: [{name: eth0, mac: "BC:24:11:AA:BB:01", addrs: [192.0.2.10/24]}],
//	     firewall: {enable: true, ipfilter: true}}
//	ipsets:
//	  - {vmid: 100, name: ipfilter-net0, entries: [{cidr: 192.0.2.10}]}   # vmid 0 or absent: cluster
type State struct {
	Tokens []StateToken `json:"tokens"`
	VMs    []StateVM    `json:"vms"`
	IPSets []StateIPSet `json:"ipsets"`
}

// StateToken is an API token; nil Privileges means all.
type StateToken struct {
	ID         string   `json:"id"`
	Secret     string   `json:"secret"`
	SecretFile string   `json:"secretFile"`
	Privileges []string `json:"privileges"`
}

// StateVM is a VM; Agent absent means no guest agent configured.
type StateVM struct {
	VMID      int                `json:"vmid"`
	Node      string             `json:"node"`
	Name      string             `json:"name"`
	UUID      string             `json:"uuid"`
	SKU       string             `json:"sku"`
	Cores     int                `json:"cores"`
	Sockets   int                `json:"sockets"`
	MemoryMiB int                `json:"memoryMiB"`
	Nets      map[string]string  `json:"nets"`      // "net0" (or "0") -> raw value
	IPConfigs map[string]string  `json:"ipconfigs"` // "ipconfig0" (or "0") -> raw value
	Status    string             `json:"status"`
	Agent     *[]StateAgentIface `json:"agent"`
	Tags      string             `json:"tags"`
	Template  bool               `json:"template"`
	Firewall  *struct {
		Enable   bool `json:"enable"`
		IPFilter bool `json:"ipfilter"`
	} `json:"firewall"`
}

// StateAgentIface is one interface the guest agent reports.
type StateAgentIface struct {
	Name  string   `json:"name"`
	MAC   string   `json:"mac"`
	Addrs []string `json:"addrs"` // CIDR: address/prefix length
}

// StateIPSet is a firewall IPSet; VMID 0 is the cluster firewall.
type StateIPSet struct {
	VMID    int    `json:"vmid"`
	Name    string `json:"name"`
	Entries []struct {
		CIDR    string `json:"cidr"`
		Comment string `json:"comment"`
		NoMatch bool   `json:"nomatch"`
	} `json:"entries"`
}

// LoadState reads a state file strictly: unknown fields are errors.
// Relative secretFile paths are relative to the state file.
func LoadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st State
	if err := yaml.UnmarshalStrict(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i := range st.Tokens {
		t := &st.Tokens[i]
		if t.SecretFile != "" {
			if t.Secret != "" {
				return nil, fmt.Errorf("%s: tokens[%d]: give secret or secretFile, not both", path, i)
			}
			f := t.SecretFile
			if !filepath.IsAbs(f) {
				f = filepath.Join(filepath.Dir(path), f)
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("%s: tokens[%d].secretFile: %w", path, i, err)
			}
			t.Secret = strings.TrimSpace(string(b))
		}
	}
	return &st, nil
}

// ServerTokens converts the state's tokens for Options.Tokens.
func (st *State) ServerTokens() []Token {
	out := make([]Token, 0, len(st.Tokens))
	for _, t := range st.Tokens {
		out = append(out, Token{ID: t.ID, Secret: t.Secret, Privileges: t.Privileges})
	}
	return out
}

// Apply adds the state's VMs, firewall options and IPSets to a server.
// Errors name the offending field.
func (st *State) Apply(s *Server) error {
	for i, sv := range st.VMs {
		vm, err := sv.toVM()
		if err != nil {
			return fmt.Errorf("vms[%d].%w", i, err)
		}
		if err := s.AddVM(vm); err != nil {
			return fmt.Errorf("vms[%d]: %w", i, err)
		}
		if sv.Firewall != nil {
			s.SetFirewallOptions(vm.VMID, sv.Firewall.Enable, sv.Firewall.IPFilter)
		}
	}
	for i, set := range st.IPSets {
		if set.Name == "" {
			return fmt.Errorf("ipsets[%d].name: must be set", i)
		}
		scope := pve.ClusterScope
		if set.VMID != 0 {
			s.mu.Lock()
			vm := s.vms[set.VMID]
			s.mu.Unlock()
			node := ""
			if vm != nil {
				node = vm.Node
			}
			scope = pve.VMScope(pve.VMRef{Node: node, VMID: set.VMID})
		}
		var entries []pve.IPSetEntry
		for j, e := range set.Entries {
			if _, err := NormalizeCIDR(e.CIDR); err != nil {
				return fmt.Errorf("ipsets[%d].entries[%d].cidr: %q: %v", i, j, e.CIDR, err)
			}
			entries = append(entries, pve.IPSetEntry{CIDR: e.CIDR, Comment: e.Comment, NoMatch: e.NoMatch})
		}
		s.SeedIPSet(scope, set.Name, entries...)
	}
	return nil
}

func (sv StateVM) toVM() (VM, error) {
	vm := VM{VMID: sv.VMID, Node: sv.Node, Name: sv.Name, UUID: sv.UUID, SKU: sv.SKU, Cores: sv.Cores,
		Sockets: sv.Sockets, MemoryMiB: sv.MemoryMiB, Status: sv.Status, Tags: sv.Tags, Template: sv.Template,
		Nets: map[int]string{}}
	for k, v := range sv.Nets {
		n, err := strconv.Atoi(strings.TrimPrefix(k, "net"))
		if err != nil || n < 0 || n > 31 {
			return VM{}, fmt.Errorf("nets.%s: key must be net0..net31", k)
		}
		vm.Nets[n] = v
	}
	for k, v := range sv.IPConfigs {
		n, err := strconv.Atoi(strings.TrimPrefix(k, "ipconfig"))
		if err != nil || n < 0 || n > 31 {
			return VM{}, fmt.Errorf("ipconfigs.%s: key must be ipconfig0..ipconfig31", k)
		}
		if vm.IPConfigs == nil {
			vm.IPConfigs = map[int]string{}
		}
		vm.IPConfigs[n] = v
	}
	if sv.Agent != nil {
		vm.Agent = []AgentIface{}
		for i, a := range *sv.Agent {
			ai := AgentIface{Name: a.Name, MAC: a.MAC}
			for j, addr := range a.Addrs {
				p, err := netip.ParsePrefix(addr)
				if err != nil {
					return VM{}, fmt.Errorf("agent[%d].addrs[%d]: %q is not address/length", i, j, addr)
				}
				ai.Addrs = append(ai.Addrs, p)
			}
			vm.Agent = append(vm.Agent, ai)
		}
	}
	return vm, nil
}
