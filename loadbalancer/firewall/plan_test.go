package firewall

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

const dg = "0123456789abcdef0123456789abcdef01234567"

func ent(cidr, comment string) pve.IPSetEntry {
	return pve.IPSetEntry{CIDR: cidr, Comment: comment, Digest: dg}
}

func nomatch(cidr, comment string) pve.IPSetEntry {
	e := ent(cidr, comment)
	e.NoMatch = true
	return e
}

func want(cidr string, owners ...string) Want {
	p, ok := ParseCIDR(cidr)
	if !ok {
		panic(cidr)
	}
	return Want{Prefix: p, Comment: ServicesComment(owners)}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// act renders an action compactly: "create", "add 192.0.2.10 [pvelb: ns/a]",
// "seed 198.51.100.5", "update 192.0.2.10 [..]", "delete 192.0.2.9".
func act(a Action) string {
	switch a.Kind {
	case ActionCreateSet:
		return "create"
	case ActionAdd:
		if a.Seed {
			if a.Comment != SeedComment {
				return "seed with wrong comment " + a.Comment
			}
			return "seed " + a.CIDR
		}
		return fmt.Sprintf("add %s [%s]", a.CIDR, a.Comment)
	case ActionUpdateComment:
		return fmt.Sprintf("update %s [%s] digest=%v", a.CIDR, a.Comment, a.Digest == dg)
	case ActionDelete:
		return fmt.Sprintf("delete %s digest=%v", a.CIDR, a.Digest == dg)
	}
	return "?"
}

func TestPlanSet(t *testing.T) {
	tests := []struct {
		name      string
		in        SetInput
		state     SetState
		actions   []string
		noteMatch string
	}{
		{
			name:    "cluster set missing is created, then filled",
			in:      SetInput{Name: "pvelb-vips", Want: []Want{want("192.0.2.11", "ns/b"), want("192.0.2.10", "ns/a")}},
			state:   SetChanged,
			actions: []string{"create", "add 192.0.2.10 [pvelb: ns/a]", "add 192.0.2.11 [pvelb: ns/b]"},
		},
		{
			name:    "cluster set missing is created even with no VIPs",
			in:      SetInput{Name: "pvelb-vips"},
			state:   SetChanged,
			actions: []string{"create"},
		},
		{
			name: "in sync writes nothing",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/a"), want("2001:db8::10", "ns/a")},
				Entries: []pve.IPSetEntry{ent("192.0.2.10", "pvelb: ns/a"), ent("2001:db8::10", "pvelb: ns/a"), ent("203.0.113.0/24", "office")}},
			state: SetInSync,
		},
		{
			name: "user entries untouched, our stale entry removed, new one added first",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.11", "ns/b")},
				Entries: []pve.IPSetEntry{ent("192.0.2.10", "pvelb: ns/a"), ent("192.0.2.99", "mine"), ent("192.0.2.98", ""),
					ent("myalias", "pvelb-like but not: pvelb"), nomatch("192.0.2.97", "")}},
			state:   SetChanged,
			actions: []string{"add 192.0.2.11 [pvelb: ns/b]", "delete 192.0.2.10 digest=true"},
		},
		{
			name: "user network covering the VIP: nothing added",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, Want: []Want{want("192.0.2.10", "ns/a")},
				Entries: []pve.IPSetEntry{ent("192.0.2.0/24", "lab net")}},
			state:     SetInSync,
			noteMatch: `already admitted by user entry "192.0.2.0/24"`,
		},
		{
			name: "user entry with the same address and no comment: nothing added, nothing changed",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, Want: []Want{want("2001:db8::10", "ns/a")},
				Entries: []pve.IPSetEntry{ent("2001:db8::10", "")}},
			state: SetInSync,
		},
		{
			name: "user nomatch entry for the VIP is respected",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/a")},
				Entries: []pve.IPSetEntry{nomatch("192.0.2.10", "blocked on purpose")}},
			state:     SetInSync,
			noteMatch: "nomatch",
		},
		{
			name: "user nomatch network does not count as admitting",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/a")},
				Entries: []pve.IPSetEntry{nomatch("192.0.2.0/24", "")}},
			state:   SetChanged,
			actions: []string{"add 192.0.2.10 [pvelb: ns/a]"},
		},
		{
			name: "shared IP gains an owner: our comment is updated in place",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/b", "ns/a")},
				Entries: []pve.IPSetEntry{ent("192.0.2.10", "pvelb: ns/a")}},
			state:   SetChanged,
			actions: []string{"update 192.0.2.10 [pvelb: ns/a,ns/b] digest=true"},
		},
		{
			name: "user entry's comment is never updated",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/a")},
				Entries: []pve.IPSetEntry{ent("192.0.2.10", "web VIP, keep")}},
			state: SetInSync,
		},
		{
			name: "shared IP: one of two owners leaves, entry stays with the other",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/b")},
				Entries: []pve.IPSetEntry{ent("192.0.2.10", "pvelb: ns/a,ns/b")}},
			state:   SetChanged,
			actions: []string{"update 192.0.2.10 [pvelb: ns/b] digest=true"},
		},
		{
			name: "VM set missing and ipfilter off: nothing written",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Want: []Want{want("192.0.2.10", "ns/a")},
				OwnAddrs: addrs("198.51.100.5")},
			state:     SetFilterInactive,
			noteMatch: "ipfilter is off",
		},
		{
			name: "VM set missing and ipfilter on: create, seed own addresses, then VIPs",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, IPFilter: true,
				Want:     []Want{want("192.0.2.10", "ns/a"), want("2001:db8::10", "ns/a")},
				OwnAddrs: addrs("198.51.100.5", "2001:db8:1::5", "fe80::1", "198.51.100.5")},
			state: SetChanged,
			actions: []string{"create", "seed 198.51.100.5", "seed 2001:db8:1::5",
				"add 192.0.2.10 [pvelb: ns/a]", "add 2001:db8::10 [pvelb: ns/a]"},
		},
		{
			name: "VM set missing, ipfilter on, own addresses unknown: refused",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, IPFilter: true, Want: []Want{want("192.0.2.10", "ns/a")},
				OwnAddrs: addrs("fe80::1")},
			state: SetRefused,
		},
		{
			name:  "VM set missing and nothing to admit: nothing written even with ipfilter on",
			in:    SetInput{Name: "ipfilter-net0", VMFilter: true, IPFilter: true, OwnAddrs: addrs("198.51.100.5")},
			state: SetInSync,
		},
		{
			name: "seed entries are kept when the last VIP goes",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, OwnAddrs: addrs("198.51.100.5"),
				Entries: []pve.IPSetEntry{ent("198.51.100.5", SeedComment), ent("192.0.2.10", "pvelb: ns/a")}},
			state:   SetChanged,
			actions: []string{"delete 192.0.2.10 digest=true"},
		},
		{
			name: "seed for an address the VM no longer has is kept; its new address is seeded",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, OwnAddrs: addrs("198.51.100.6"),
				Want:    []Want{want("192.0.2.10", "ns/a")},
				Entries: []pve.IPSetEntry{ent("198.51.100.5", SeedComment), ent("192.0.2.10", "pvelb: ns/a")}},
			state:   SetChanged,
			actions: []string{"seed 198.51.100.6"},
		},
		{
			name: "a set the user created is not seeded",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, OwnAddrs: addrs("198.51.100.6"),
				Want: []Want{want("192.0.2.10", "ns/a")}, Entries: []pve.IPSetEntry{ent("198.51.100.0/24", "")}},
			state:   SetChanged,
			actions: []string{"add 192.0.2.10 [pvelb: ns/a]"},
		},
		{
			name: "our stale entry that alone admits the VM's own address is kept",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, OwnAddrs: addrs("192.0.2.3"),
				Entries: []pve.IPSetEntry{ent("192.0.2.0/28", "pvelb: pool blue"), ent("192.0.2.10", "pvelb: ns/a")}},
			state:     SetChanged,
			actions:   []string{"delete 192.0.2.10 digest=true"},
			noteMatch: "only entry admitting the VM's own address 192.0.2.3",
		},
		{
			name: "our stale entry is removed when a user entry also admits the VM's address",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, OwnAddrs: addrs("192.0.2.3"),
				Entries: []pve.IPSetEntry{ent("192.0.2.0/28", "pvelb: pool blue"), ent("192.0.2.3", "me")}},
			state:   SetChanged,
			actions: []string{"delete 192.0.2.0/28 digest=true"},
		},
		{
			name: "leaving admit-ranges: single VIP added before the range entries go",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("192.0.2.10", "ns/a")},
				Entries: []pve.IPSetEntry{ent("192.0.2.8/29", "pvelb: pool blue"), ent("192.0.2.16/30", "pvelb: pool blue")}},
			state: SetChanged,
			actions: []string{"add 192.0.2.10 [pvelb: ns/a]", "delete 192.0.2.8/29 digest=true",
				"delete 192.0.2.16/30 digest=true"},
		},
		{
			name: "admit-ranges entries in sync; VIP inside needs nothing more",
			in: SetInput{Name: "pvelb-vips", Exists: true,
				Want:    []Want{{Prefix: netip.MustParsePrefix("192.0.2.8/29"), Comment: PoolsComment([]string{"blue"})}},
				Entries: []pve.IPSetEntry{ent("192.0.2.8/29", "pvelb: pool blue")}},
			state: SetInSync,
		},
		{
			name: "entry of ours with an unreadable cidr is removed by its stored string",
			in: SetInput{Name: "pvelb-vips", Exists: true,
				Entries: []pve.IPSetEntry{ent("oldalias", "pvelb: ns/a")}},
			state:   SetChanged,
			actions: []string{"delete oldalias digest=true"},
		},
		{
			name: "VIP equal to a seed needs nothing",
			in: SetInput{Name: "ipfilter-net0", VMFilter: true, Exists: true, OwnAddrs: addrs("192.0.2.10"),
				Want: []Want{want("192.0.2.10", "ns/a")}, Entries: []pve.IPSetEntry{ent("192.0.2.10", SeedComment)}},
			state: SetInSync,
		},
		{
			name: "IPv6 entry stored in another spelling is recognised",
			in: SetInput{Name: "pvelb-vips", Exists: true, Want: []Want{want("2001:db8::a", "ns/a")},
				Entries: []pve.IPSetEntry{ent("2001:DB8:0::A", "pvelb: ns/a")}},
			state: SetInSync,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := PlanSet(tt.in)
			if p.State != tt.state {
				t.Fatalf("state = %s, want %s (refusal %q, notes %q)", p.State, tt.state, p.Refusal, p.Notes)
			}
			var got []string
			for _, a := range p.Actions {
				got = append(got, act(a))
			}
			if strings.Join(got, "\n") != strings.Join(tt.actions, "\n") {
				t.Fatalf("actions:\n got %q\nwant %q", got, tt.actions)
			}
			if tt.noteMatch != "" && !strings.Contains(strings.Join(p.Notes, "\n"), tt.noteMatch) {
				t.Fatalf("notes %q do not mention %q", p.Notes, tt.noteMatch)
			}
			if p.State == SetRefused && !strings.Contains(p.Refusal, "cut the VM off") {
				t.Fatalf("refusal %q does not say why", p.Refusal)
			}
			// No plan ever touches an entry that is not pvelb's.
			for _, a := range p.Actions {
				if a.Kind != ActionDelete && a.Kind != ActionUpdateComment {
					continue
				}
				for _, e := range tt.in.Entries {
					if e.CIDR == a.CIDR && (!IsOurs(e.Comment) || IsSeed(e.Comment)) {
						t.Fatalf("%s touches entry %q (%q) that pvelb must not change", a.Kind, e.CIDR, e.Comment)
					}
				}
			}
		})
	}
}

// Applying a plan to the entries it was made from must give a set that the
// next plan leaves alone: the planner converges in one step.
func TestPlanSetConverges(t *testing.T) {
	own := addrs("198.51.100.5")
	wants := []Want{want("192.0.2.10", "ns/a"), want("192.0.2.11", "ns/b", "ns/c"), want("2001:db8::1", "ns/a")}
	starts := [][]pve.IPSetEntry{
		nil,
		{ent("192.0.2.10", "pvelb: ns/old"), ent("192.0.2.12", "pvelb: ns/gone"), ent("192.0.2.0/30", "user")},
		{ent("198.51.100.5", SeedComment), ent("2001:db8::/64", "user v6")},
	}
	for i, start := range starts {
		in := SetInput{Name: "ipfilter-net0", VMFilter: true, IPFilter: true, Want: wants, OwnAddrs: own,
			Exists: start != nil, Entries: start}
		set := simulate(t, in)
		in.Exists, in.Entries = true, set
		if p := PlanSet(in); p.State != SetInSync {
			t.Fatalf("start %d: second plan not in sync: %v (set %v)", i, p.Actions, set)
		}
	}
}

// simulate applies a plan to a copy of the entries like Proxmox would.
func simulate(t *testing.T, in SetInput) []pve.IPSetEntry {
	t.Helper()
	set := append([]pve.IPSetEntry(nil), in.Entries...)
	for _, a := range PlanSet(in).Actions {
		switch a.Kind {
		case ActionAdd:
			set = append(set, pve.IPSetEntry{CIDR: a.CIDR, Comment: a.Comment})
		case ActionUpdateComment:
			for i := range set {
				if set[i].CIDR == a.CIDR {
					set[i].Comment = a.Comment
				}
			}
		case ActionDelete:
			for i := range set {
				if set[i].CIDR == a.CIDR {
					set = append(set[:i], set[i+1:]...)
					break
				}
			}
		}
	}
	return set
}
