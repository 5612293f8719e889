package doctor

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/names"
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

// Traffic is what a rule evaluation asks about: one direction, protocol and
// destination port.
type Traffic struct {
	Dir   string // "in" or "out"
	Proto string // "udp" or "tcp"
	Port  int
}

// Passes evaluates a VM's rules in order for tr, as pve-firewall does: the
// first enabled matching rule decides, security groups expand in place, and
// policy (the VM's policy_in or policy_out; "" is the default: DROP in,
// ACCEPT out) decides when nothing matches. Macros never match (none covers
// the ports pvelb uses).
func Passes(rules []pve.FirewallRule, groups map[string][]pve.FirewallRule, policy string, tr Traffic) Verdict {
	if policy == "" {
		policy = "DROP" // a VM's default policy_in
		if tr.Dir == "out" {
			policy = "ACCEPT"
		}
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
			if r.Type != tr.Dir || r.Macro != "" || !protoIs(r.Proto, tr.Proto) || !portIn(r.DPort, tr.Port) {
				continue
			}
			switch strings.ToUpper(r.Action) {
			case "ACCEPT":
				limit := r.Source
				if tr.Dir == "out" {
					limit = ""
				}
				return Verdict{Admitted: true, By: name, SourceLimited: limit}, true
			case "DROP", "REJECT":
				return Verdict{By: name + " " + strings.ToUpper(r.Action)}, true
			}
		}
		return Verdict{}, false
	}
	if v, ok := walk(rules, ""); ok {
		return v
	}
	return Verdict{Admitted: strings.EqualFold(policy, "ACCEPT"), By: "policy_" + tr.Dir + " " + strings.ToUpper(policy)}
}

// UDPInbound is Passes for inbound UDP to port.
func UDPInbound(rules []pve.FirewallRule, groups map[string][]pve.FirewallRule, policy string, port int) Verdict {
	return Passes(rules, groups, policy, Traffic{Dir: "in", Proto: "udp", Port: port})
}

// protoIs: a rule's proto ("" any, a name or an IP protocol number) covers
// want ("udp" or "tcp").
func protoIs(p, want string) bool {
	p = strings.ToLower(strings.TrimSpace(p))
	num := map[string]string{"udp": "17", "tcp": "6"}[want]
	return p == "" || p == want || p == num
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
		for _, b := range p.opts.bgp {
			if b.selector != nil && !b.selector.Matches(labels.Set(m.node.Labels)) {
				continue
			}
			if out := Passes(rules, groups, opts.PolicyOut, Traffic{Dir: "out", Proto: "tcp", Port: b.port}); !out.Admitted {
				r.add(Fail, area,
					fmt.Sprintf("pvesh create %s/firewall/rules --type out --action ACCEPT --proto tcp --dport %d --pos 0 --enable 1 --comment 'pvelb BGP to %s'", fmt.Sprintf("/nodes/%s/qemu/%d", m.vm.Resource.Node, m.vm.Resource.VMID), b.port, b.peer),
					"VM %d's firewall drops its BGP session to BGPPeer %s (TCP %d out) by %s: the router gets no routes from this node", m.vm.Resource.VMID, b.peer, b.port, out.By)
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

// readBGPSessions reads the BGPPeers (none when the CRD or the objects are
// missing: CheckKubernetes reports that).
func readBGPSessions(ctx context.Context, dyn dynamic.Interface) []bgpSession {
	list, err := dyn.Resource(names.BGPPeers).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []bgpSession
	for i := range list.Items {
		p, err := names.BGPPeer(&list.Items[i])
		if err != nil {
			continue
		}
		b := bgpSession{peer: p.Name, port: int(p.Spec.PeerPort)}
		if b.port == 0 {
			b.port = 179
		}
		if p.Spec.NodeSelector != nil {
			if b.selector, err = metav1.LabelSelectorAsSelector(p.Spec.NodeSelector); err != nil {
				continue
			}
		}
		out = append(out, b)
	}
	return out
}
