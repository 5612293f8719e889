package doctor

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/pvelb/pvelb/provider/pve"
)

// A VM's firewall drops inbound traffic by default (policy_in DROP), and the
// IP filter pvelb relies on needs that firewall on: unless a rule admits
// them, the announcers' heartbeats never reach the VM, and the node hears
// no peer. doctor reads the rules through the API and says which rule to add.

// Verdict is what a VM's inbound rules do with one UDP port.
type Verdict struct {
	Admitted bool
	// By names the deciding rule ("rule 3", "rule 0 (group k8s) 2"), or
	// "policy_in DROP" when no rule matched.
	By string
	// SourceLimited: the admitting rule has a source restriction doctor
	// cannot resolve (an IPSet or alias); it must include the nodes.
	SourceLimited string
}

// UDPInbound evaluates a VM's rules in order for inbound UDP to port, as
// pve-firewall does: the first enabled matching rule decides, security
// groups expand in place, and policy decides when nothing matches.
// Macros never match (none covers the membership port).
func UDPInbound(rules []pve.FirewallRule, groups map[string][]pve.FirewallRule, policy string, port int) Verdict {
	if policy == "" {
		policy = "DROP" // a VM's default
	}
	var walk func(rules []pve.FirewallRule, where string) (Verdict, bool)
	walk = func(rules []pve.FirewallRule, where string) (Verdict, bool) {
		for _, r := range rules {
			if !r.Enable {
				continue
			}
			name := fmt.Sprintf("%srule %d", where, r.Pos)
			if r.Type == "group" {
				if v, ok := walk(groups[r.Action], name+" (group "+r.Action+") "); ok {
					return v, true
				}
				continue
			}
			if r.Type != "in" || r.Macro != "" || !protoUDP(r.Proto) || !portIn(r.DPort, port) {
				continue
			}
			switch strings.ToUpper(r.Action) {
			case "ACCEPT":
				return Verdict{Admitted: true, By: name, SourceLimited: r.Source}, true
			case "DROP", "REJECT":
				return Verdict{By: name + " " + strings.ToUpper(r.Action)}, true
			}
		}
		return Verdict{}, false
	}
	if v, ok := walk(rules, ""); ok {
		return v
	}
	return Verdict{Admitted: strings.EqualFold(policy, "ACCEPT"), By: "policy_in " + strings.ToUpper(policy)}
}

func protoUDP(p string) bool {
	p = strings.ToLower(strings.TrimSpace(p))
	return p == "" || p == "udp" || p == "17"
}

// portIn reports whether a pve-firewall port list ("7947", "7946:7948",
// "179,7947") holds port; empty means any port. Service names never match.
func portIn(list string, port int) bool {
	if strings.TrimSpace(list) == "" {
		return true
	}
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), ":")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		if a <= port && port <= b {
			return true
		}
	}
	return false
}

// checkMembershipRules: every matched VM whose firewall filters its NICs
// admits the announcers' heartbeats.
func checkMembershipRules(ctx context.Context, p *proxmoxRun, r *Report) bool {
	rr, ok := p.client.(pve.RuleReader)
	if !ok || len(p.matches) == 0 {
		return true
	}
	port := p.opts.MembershipPort
	cluster, err := rr.ClusterFirewallOptions(ctx)
	if err != nil {
		r.add(Warn, p.area, "the token needs Sys.Audit on /", "reading the datacenter firewall options: %v", err)
		return true
	}
	if !cluster.Enable {
		return true // no VM rule applies
	}
	groups := map[string][]pve.FirewallRule{}
	for _, m := range p.matches {
		area := "node " + m.node.Name
		opts, err := p.client.VMFirewallOptions(ctx, m.vm.Ref())
		if err != nil || !opts.Enable || !anyNICFiltered(m.vm.Config, p.cfg.Firewall.NICs) {
			continue // reading errors are reported by checkIPFilters
		}
		rules, err := rr.VMFirewallRules(ctx, m.vm.Ref())
		if err != nil {
			r.add(Warn, area, "the token needs VM.Audit on /vms/"+strconv.Itoa(m.vm.Resource.VMID), "reading the VM's firewall rules: %v", err)
			continue
		}
		for _, rule := range rules {
			if rule.Type == "group" && rule.Enable {
				if _, done := groups[rule.Action]; !done {
					g, err := rr.GroupRules(ctx, rule.Action)
					if err != nil {
						r.add(Warn, area, "", "reading security group %s: %v", rule.Action, err)
					}
					groups[rule.Action] = g
				}
			}
		}
		v := UDPInbound(rules, groups, opts.PolicyIn, port)
		ref := fmt.Sprintf("/nodes/%s/qemu/%d", m.vm.Resource.Node, m.vm.Resource.VMID)
		switch {
		case !v.Admitted:
			r.add(Fail, area,
				fmt.Sprintf("pvesh create %s/firewall/rules --type in --action ACCEPT --proto udp --dport %d --pos 0 --enable 1 --comment 'pvelb announcer membership' (or the same rule in a security group every node VM uses)", ref, port),
				"VM %d's firewall drops the announcers' heartbeats (UDP %d in) by %s: this node hears no peer and never answers for a VIP", m.vm.Resource.VMID, port, v.By)
		case v.SourceLimited != "":
			r.add(OK, area, "", "VM firewall admits UDP %d from %s (%s): it must hold every node's address", port, v.SourceLimited, v.By)
		default:
			r.add(OK, area, "", "VM firewall admits the announcers' heartbeats, UDP %d (%s)", port, v.By)
		}
	}
	return true
}

// anyNICFiltered: one of the NICs pvelb manages has firewall=1.
func anyNICFiltered(cfg *pve.VMConfig, nics []string) bool {
	if cfg == nil {
		return false
	}
	for _, nic := range nics {
		idx, err := strconv.Atoi(strings.TrimPrefix(nic, "net"))
		if err != nil {
			continue
		}
		if raw, ok := cfg.Nets[idx]; ok {
			if nc, err := pve.ParseNet(raw); err == nil && nc.Firewall {
				return true
			}
		}
	}
	return false
}
