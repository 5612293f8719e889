package pvesim

import (
	"fmt"
	"net/http"
	"strconv"
)

// Rule is one firewall rule as Proxmox lists it (pve-firewall's rule
// format): Type "in", "out" or "group" (then Action names a security
// group); Action "ACCEPT", "DROP" or "REJECT"; Proto, DPort and Source
// empty for "any".
type Rule struct {
	Type, Action  string
	Proto, DPort  string
	Source, Macro string
	Comment       string
	Enable        bool
}

func (r Rule) row(pos int, digest string) map[string]any {
	row := map[string]any{"pos": pos, "type": r.Type, "action": r.Action, "enable": b2i(r.Enable), "digest": digest}
	for k, v := range map[string]string{"proto": r.Proto, "dport": r.DPort, "source": r.Source, "macro": r.Macro, "comment": r.Comment} {
		if v != "" {
			row[k] = v
		}
	}
	return row
}

// rulesDigest stands for the digest of the .fw file the rules are in.
func rulesDigest(rules []Rule) string {
	return optionsDigest(map[string]string{"rules": fmt.Sprint(rules)})
}

// SeedRule appends a rule to a VM's firewall, as an administrator would
// (qm firewall rules, or the GUI).
func (s *Server) SeedRule(vmid int, r Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.firewallLocked(vmid)
	fw.rules = append(fw.rules, r)
}

// SeedGroup defines a cluster security group with its rules.
func (s *Server) SeedGroup(name string, rules ...Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups == nil {
		s.groups = map[string][]Rule{}
	}
	s.groups[name] = append([]Rule(nil), rules...)
}

// SetVMFirewallOption sets one option of a VM's firewall (policy_in, ...).
func (s *Server) SetVMFirewallOption(vmid int, key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.firewallLocked(vmid).options[key] = value
}

func rulesRows(rules []Rule) []map[string]any {
	d := rulesDigest(rules)
	rows := []map[string]any{}
	for i, r := range rules {
		rows = append(rows, r.row(i, d))
	}
	return rows
}

// vmRules answers GET /nodes/{node}/qemu/{vmid}/firewall/rules.
func (s *Server) vmRules(r *request) (any, error) {
	if _, err := s.vmOnNode(r); err != nil {
		return nil, err
	}
	key, _ := strconv.Atoi(r.params["vmid"])
	s.mu.Lock()
	defer s.mu.Unlock()
	return rulesRows(s.firewallLocked(key).rules), nil
}

// groupRules answers GET /cluster/firewall/groups/{group}.
func (s *Server) groupRules(r *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rules, ok := s.groups[r.params["group"]]
	if !ok {
		return nil, fail(http.StatusInternalServerError, "no such security group '%s'", r.params["group"])
	}
	return rulesRows(rules), nil
}

// clusterOptions answers GET /cluster/firewall/options: the datacenter
// firewall's options (enable defaults to 0).
func (s *Server) clusterOptions(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts := s.firewallLocked(clusterKey).options
	res := map[string]any{"digest": optionsDigest(opts)}
	for k, v := range opts {
		if k == "enable" {
			n, _ := strconv.Atoi(v)
			res[k] = n
		} else {
			res[k] = v
		}
	}
	return res, nil
}
