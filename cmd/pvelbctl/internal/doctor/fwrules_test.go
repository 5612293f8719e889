package doctor

import (
	"context"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

func TestPassesOutbound(t *testing.T) {
	bgp := Traffic{Dir: "out", Proto: "tcp", Port: 179}
	if v := Passes(nil, nil, "", bgp); !v.Admitted || v.By != "policy_out ACCEPT" {
		t.Errorf("default outbound: %+v; want ACCEPT", v)
	}
	if v := Passes(nil, nil, "DROP", bgp); v.Admitted {
		t.Errorf("policy_out DROP: %+v", v)
	}
	rules := []pve.FirewallRule{{Pos: 0, Type: "out", Action: "ACCEPT", Enable: true, Proto: "6", DPort: "179"}}
	if v := Passes(rules, nil, "DROP", bgp); !v.Admitted || v.By != "rule 0" {
		t.Errorf("out rule by protocol number: %+v", v)
	}
	if v := Passes(rules, nil, "DROP", Traffic{Dir: "in", Proto: "tcp", Port: 179}); v.Admitted {
		t.Errorf("an out rule admitted inbound traffic: %+v", v)
	}
}

func TestUDPInbound(t *testing.T) {
	accept := func(pos int, proto, dport string) pve.FirewallRule {
		return pve.FirewallRule{Pos: pos, Type: "in", Action: "ACCEPT", Enable: true, Proto: proto, DPort: dport}
	}
	groups := map[string][]pve.FirewallRule{"k8s": {accept(0, "tcp", "6443"), accept(1, "udp", "7946:7948")}}
	for _, tc := range []struct {
		name   string
		rules  []pve.FirewallRule
		policy string
		ok     bool
		by     string
	}{
		{"no rules, default policy", nil, "", false, "policy_in DROP"},
		{"policy ACCEPT", nil, "ACCEPT", true, "policy_in ACCEPT"},
		{"exact port", []pve.FirewallRule{accept(0, "tcp", "7947"), accept(1, "udp", "7947")}, "DROP", true, "rule 1"},
		{"list", []pve.FirewallRule{accept(0, "udp", "179,7947")}, "DROP", true, "rule 0"},
		{"any proto any port", []pve.FirewallRule{accept(0, "", "")}, "DROP", true, "rule 0"},
		{"group", []pve.FirewallRule{{Pos: 0, Type: "group", Action: "k8s", Enable: true}}, "DROP", true, "rule 0 (group k8s) rule 1"},
		{"disabled rule", []pve.FirewallRule{{Pos: 0, Type: "in", Action: "ACCEPT", Proto: "udp", DPort: "7947"}}, "DROP", false, "policy_in DROP"},
		{"drop first", []pve.FirewallRule{{Pos: 0, Type: "in", Action: "DROP", Enable: true, Proto: "udp"}, accept(1, "udp", "7947")}, "DROP", false, "rule 0 DROP"},
		{"outbound rule", []pve.FirewallRule{{Pos: 0, Type: "out", Action: "ACCEPT", Enable: true, Proto: "udp", DPort: "7947"}}, "DROP", false, "policy_in DROP"},
		{"macro", []pve.FirewallRule{{Pos: 0, Type: "in", Action: "ACCEPT", Enable: true, Macro: "DNS"}}, "REJECT", false, "policy_in REJECT"},
		{"other port range", []pve.FirewallRule{accept(0, "udp", "8000:9000")}, "DROP", false, "policy_in DROP"},
		{"protocol number", []pve.FirewallRule{accept(0, "17", "7947")}, "DROP", true, "rule 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := UDPInbound(tc.rules, groups, tc.policy, 7947)
			if v.Admitted != tc.ok || v.By != tc.by {
				t.Fatalf("= %+v; want admitted %v by %q", v, tc.ok, tc.by)
			}
		})
	}
}

// TestDoctorMembershipFirewallRules: the simulator's datacenter firewall
// on, both VMs' firewalls on with the default policy_in; doctor passes VMs
// whose rules (own or a security group's) admit UDP 7947 and fails the
// others with the rule to add; with the datacenter firewall off it says
// nothing about rules.
func TestDoctorMembershipFirewallRules(t *testing.T) {
	const secret = "0f3c2b1a-1111-2222-3333-444455556666"
	sim, nodes := simCluster(t, []pvesim.Token{{ID: "pvelb@pve!ccm", Secret: secret}})
	nodes = nodes[:2]
	cfg := cloudConfig(t, sim, secret)
	sim.SetClusterFirewall(true)
	sim.SeedRule(101, pvesim.Rule{Type: "in", Action: "ACCEPT", Proto: "tcp", DPort: "6443", Enable: true})
	sim.SeedRule(101, pvesim.Rule{Type: "in", Action: "ACCEPT", Proto: "udp", DPort: "7947", Enable: true})
	sim.SeedGroup("k8s", pvesim.Rule{Type: "in", Action: "ACCEPT", Proto: "udp", DPort: "7946:7948", Enable: true})
	sim.SeedRule(102, pvesim.Rule{Type: "group", Action: "k8s", Enable: true})

	r := Run(context.Background(), cfg, nodes, nil)
	for _, n := range []string{"node talos-101", "node talos-102"} {
		if got := strings.Join(findings(r, OK, n), "\n"); !strings.Contains(got, "VM firewall admits the announcers' heartbeats, UDP 7947") {
			t.Errorf("%s: ok findings %q", n, got)
		}
	}

	// 102's group loses the port; 101's policy becomes REJECT (its own rule still admits).
	sim.SeedGroup("k8s", pvesim.Rule{Type: "in", Action: "ACCEPT", Proto: "tcp", DPort: "6443", Enable: true})
	sim.SetVMFirewallOption(101, "policy_in", "REJECT")
	r = Run(context.Background(), cfg, nodes, nil)
	got := strings.Join(findings(r, Fail, "node talos-102"), "\n")
	if !strings.Contains(got, "VM 102's firewall drops the announcers' heartbeats (UDP 7947 in) by policy_in DROP") {
		t.Errorf("talos-102 failures %q", got)
	}
	var fix string
	for _, f := range r.Findings {
		if f.Area == "node talos-102" && strings.Contains(f.Message, "heartbeats") {
			fix = f.Fix
		}
	}
	if !strings.Contains(fix, "pvesh create /nodes/pve2/qemu/102/firewall/rules --type in --action ACCEPT --proto udp --dport 7947") {
		t.Errorf("fix %q", fix)
	}
	if got := strings.Join(findings(r, OK, "node talos-101"), "\n"); !strings.Contains(got, "admits the announcers' heartbeats, UDP 7947 (rule 1)") {
		t.Errorf("talos-101 (its own rule still admits, whatever the policy): %q", got)
	}

	// BGP: the sessions go out on TCP 179. 101 lets them out by a rule, 102
	// drops everything outbound.
	sim.SetVMFirewallOption(101, "policy_out", "DROP")
	sim.SeedRule(101, pvesim.Rule{Type: "out", Action: "ACCEPT", Proto: "tcp", DPort: "179", Enable: true})
	sim.SetVMFirewallOption(102, "policy_out", "DROP")
	withBGP := Options{MembershipPort: 7947, bgp: []bgpSession{{peer: "router", port: 179}}}
	r = RunWith(context.Background(), cfg, nodes, nil, withBGP)
	got = strings.Join(findings(r, Fail, "node talos-102"), "\n")
	if !strings.Contains(got, "VM 102's firewall drops its BGP session to BGPPeer router (TCP 179 out) by policy_out DROP") {
		t.Errorf("talos-102 BGP: %q", got)
	}
	if got := findings(r, Fail, "node talos-101"); len(got) != 0 {
		t.Errorf("talos-101 lets BGP out by its rule: failures %q", got)
	}

	sim.SetClusterFirewall(false)
	r = Run(context.Background(), cfg, nodes, nil)
	for _, f := range r.Findings {
		if strings.Contains(f.Message, "heartbeats") {
			t.Errorf("datacenter firewall off: %+v", f)
		}
	}
}
