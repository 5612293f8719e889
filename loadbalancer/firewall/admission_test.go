package firewall

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// hosts are single-address prefixes, as the planner normalises them.
func hosts(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, hostPrefix(netip.MustParseAddr(s)))
	}
	return out
}

// What a set admits once its plan is carried out: every wanted prefix,
// whether pvelb adds it or a user entry already covers it, except one a
// user's nomatch entry for exactly that prefix keeps out.
func TestPlanSetAdmits(t *testing.T) {
	own := addrs("198.51.100.5")
	for _, tc := range []struct {
		name  string
		in    SetInput
		state SetState
		want  []netip.Prefix
	}{
		{"existing set, VIP added", SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true,
			Entries: []pve.IPSetEntry{ent("198.51.100.5", "node")},
			Want:    []Want{want("192.0.2.11", "ns/b"), want("192.0.2.10", "ns/a")}},
			SetChanged, hosts("192.0.2.10", "192.0.2.11")},
		{"covered by a user network", SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true,
			Entries: []pve.IPSetEntry{ent("192.0.2.0/24", "ops")},
			Want:    []Want{want("192.0.2.10", "ns/a")}},
			SetInSync, hosts("192.0.2.10")},
		{"user nomatch for exactly the VIP", SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true,
			Entries: []pve.IPSetEntry{nomatch("192.0.2.10", "ops: never"), ent("198.51.100.5", "node")},
			Want:    []Want{want("192.0.2.10", "ns/a"), want("192.0.2.11", "ns/b")}},
			SetChanged, hosts("192.0.2.11")},
		{"pvelb's own nomatch entry is rewritten", SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true,
			Entries: []pve.IPSetEntry{nomatch("192.0.2.10", ServicesComment([]string{"ns/a"}))},
			Want:    []Want{want("192.0.2.10", "ns/a")}},
			SetChanged, hosts("192.0.2.10")},
		{"missing set created with seeds", SetInput{Name: "ipfilter-net0", VMFilter: true, IPFilter: true, OwnAddrs: own,
			Want: []Want{want("192.0.2.10", "ns/a")}},
			SetChanged, hosts("192.0.2.10")},
		{"missing set, ipfilter off: nothing filtered", SetInput{Name: "ipfilter-net0", VMFilter: true,
			Want: []Want{want("192.0.2.10", "ns/a")}},
			SetFilterInactive, nil},
		{"missing set, ipfilter on, own address unknown", SetInput{Name: "ipfilter-net0", VMFilter: true, IPFilter: true,
			Want: []Want{want("192.0.2.10", "ns/a")}},
			SetRefused, nil},
		{"nothing wanted", SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true,
			Entries: []pve.IPSetEntry{ent("192.0.2.10", ServicesComment([]string{"ns/gone"}))}},
			SetChanged, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanSet(tc.in)
			if p.State != tc.state {
				t.Fatalf("state %s, want %s", p.State, tc.state)
			}
			if !slices.Equal(p.Admits, tc.want) {
				t.Errorf("admits %v, want %v", p.Admits, tc.want)
			}
		})
	}
}

func TestIntersectAdmissions(t *testing.T) {
	all := &Admission{Unfiltered: true}
	ab := &Admission{Prefixes: hosts("192.0.2.10", "192.0.2.11")}
	b := &Admission{Prefixes: hosts("192.0.2.11")}
	if got := intersect(all, ab); got != ab {
		t.Errorf("unfiltered ∩ x = %+v, want x", got)
	}
	if got := intersect(ab, b); !slices.Equal(got.Prefixes, b.Prefixes) || got.Unfiltered {
		t.Errorf("ab ∩ b = %+v", got)
	}
	if intersect(ab, nil) != nil || intersect(nil, all) != nil {
		t.Error("unknown ∩ x must stay unknown")
	}
}

// Each VM scope reports what its sets admit; a failed pass reports what the
// last good pass admitted, narrowed to what is still wanted, and nothing is
// claimed before a first good pass.
func TestSimScopeAdmission(t *testing.T) {
	e := newEnv(t, pvesim.Options{}, pve.Options{MaxRetries: -1}, Options{NICs: []string{"net0", "net1"}}, threeVMs)
	admission := func(res Result, vm simVM) *Admission {
		t.Helper()
		for _, s := range res.Scopes {
			if s.VM != nil && s.VM.Ref.VMID == vm.id {
				return s.Admission
			}
		}
		t.Fatalf("no scope for VM %d", vm.id)
		return nil
	}
	d := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/api", []string{"192.0.2.11"}})
	e.sim.SeedIPSet(vmScope(threeVMs[1]), "ipfilter-net1",
		pve.IPSetEntry{CIDR: "198.51.100.12", Comment: "node"}, pve.IPSetEntry{CIDR: "192.0.2.11", Comment: "ops", NoMatch: true})

	e.sim.SetOutage(true)
	if a := admission(e.pass(d), threeVMs[0]); a != nil {
		t.Fatalf("before any good pass, a failed one claims %+v", a)
	}
	e.sim.SetOutage(false)

	res := e.mustPass(d)
	if a := admission(res, threeVMs[0]); a == nil || a.Unfiltered || !slices.Equal(a.Prefixes, hosts("192.0.2.10", "192.0.2.11")) {
		t.Errorf("VM 101 (ipfilter on, sets created): %+v", a)
	}
	if a := admission(res, threeVMs[2]); a == nil || !a.Unfiltered {
		t.Errorf("VM 103 (ipfilter off, no sets): %+v, want unfiltered", a)
	}
	if s := res.Scopes[0]; s.VM != nil || s.Admission != nil {
		t.Errorf("the cluster scope reports an admission: %+v", s)
	}

	// A user's nomatch entry on one NIC keeps the VIP out of the VM.
	if a := admission(res, threeVMs[1]); a == nil || !slices.Equal(a.Prefixes, hosts("192.0.2.10")) {
		t.Errorf("VM 102 with a nomatch for 192.0.2.11 on net1: %+v, want only 192.0.2.10", a)
	}

	// During an outage, a VIP no longer wanted is not claimed; one still
	// wanted is, as the last good pass left it; a new one is not.
	d2 := e.desired(service{"default/web", []string{"192.0.2.10"}}, service{"default/new", []string{"192.0.2.12"}})
	e.sim.SetOutage(true)
	res = e.pass(d2)
	if res.Err() == nil {
		t.Fatal("pass during an outage succeeded")
	}
	if a := admission(res, threeVMs[0]); a == nil || !slices.Equal(a.Prefixes, hosts("192.0.2.10")) {
		t.Errorf("VM 101 during an outage: %+v, want 192.0.2.10 only", a)
	}
	if a := admission(res, threeVMs[2]); a == nil || !a.Unfiltered {
		t.Errorf("VM 103 during an outage: %+v, want unfiltered as last seen", a)
	}
}
