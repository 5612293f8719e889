package election

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func names(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
}

func TestOrderZoneDiversity(t *testing.T) {
	// Three hosts; pve1 has three nodes. Whatever the scores, the first
	// entries must walk through distinct zones before repeating one.
	cands := []Candidate{
		{"a1", "pve1"}, {"a2", "pve1"}, {"a3", "pve1"},
		{"b1", "pve2"}, {"c1", "pve3"},
	}
	zoneOf := map[string]string{}
	for _, c := range cands {
		zoneOf[c.Name] = c.Zone
	}
	for i := range 256 {
		o := Order(addr(i), cands)
		if len(o) != len(cands) {
			t.Fatalf("Order lost candidates: %v", names(o))
		}
		first3 := map[string]bool{o[0].Zone: true, o[1].Zone: true, o[2].Zone: true}
		if len(first3) != 3 {
			t.Fatalf("ip %s: first three %v are not on three hosts", addr(i), names(o[:3]))
		}
		// Within the round, the higher score comes first.
		if Score(addr(i), o[0].Name) < Score(addr(i), o[1].Name) {
			t.Fatalf("ip %s: %v not in score order within the first round", addr(i), names(o))
		}
	}
}

func TestElectTable(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.200")
	cands := []Candidate{{"n1", "pve1"}, {"n2", "pve1"}, {"n3", "pve2"}}
	order := names(Order(ip, cands))
	all := func(string) bool { return true }
	none := func(string) bool { return false }
	except := func(dead ...string) func(string) bool {
		return func(n string) bool { return !slices.Contains(dead, n) }
	}
	tests := []struct {
		name   string
		cands  []Candidate
		alive  func(string) bool
		want   string
		wantOK bool
	}{
		{"all alive: top of the order", cands, all, order[0], true},
		{"winner dead: next in order", cands, except(order[0]), order[1], true},
		{"two dead: last one", cands, except(order[0], order[1]), order[2], true},
		{"nobody alive", cands, none, "", false},
		{"no candidates", nil, all, "", false},
		{"single candidate", []Candidate{{"n9", ""}}, all, "n9", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Elect(ip, tt.cands, tt.alive)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("Elect = %q,%v; want %q,%v (order %v)", got, ok, tt.want, tt.wantOK, order)
			}
		})
	}
	// The successor of a dead winner is on another host when one exists.
	z := map[string]string{"n1": "pve1", "n2": "pve1", "n3": "pve2"}
	if z[order[0]] == z[order[1]] {
		t.Fatalf("successor %s shares host %s with winner %s", order[1], z[order[0]], order[0])
	}
}

// Every announcer builds its candidate list from its own informer cache, in
// whatever order; they must all agree.
func TestAllNodesAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n := 1 + r.IntN(12)
		var cands []Candidate
		for i := range n {
			cands = append(cands, Candidate{fmt.Sprintf("node-%d", i), fmt.Sprintf("pve%d", r.IntN(4))})
		}
		dead := map[string]bool{}
		for _, c := range cands {
			dead[c.Name] = r.IntN(3) == 0
		}
		alive := func(n string) bool { return !dead[n] }
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(trial)})
		if trial%2 == 1 {
			ip = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", trial))
		}
		want, wantOK := Elect(ip, cands, alive)
		wantOrder := names(Order(ip, cands))
		for view := range 5 {
			shuffled := slices.Clone(cands)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if view == 4 && len(shuffled) > 0 { // a duplicate entry must not matter either
				shuffled = append(shuffled, shuffled[0])
			}
			got, ok := Elect(ip, shuffled, alive)
			if got != want || ok != wantOK {
				t.Fatalf("trial %d view %d: %q,%v vs %q,%v", trial, view, got, ok, want, wantOK)
			}
			if o := names(Order(ip, shuffled)); !slices.Equal(o, wantOrder) {
				t.Fatalf("trial %d view %d: order %v vs %v", trial, view, o, wantOrder)
			}
		}
	}
}

// IPv4-mapped IPv6 spells the same IPv4 address: it must elect the same node.
func TestMappedAddressIsTheSameIP(t *testing.T) {
	cands := []Candidate{{"n1", ""}, {"n2", ""}, {"n3", ""}, {"n4", ""}}
	for i := range 64 {
		v4 := addr(i)
		mapped := netip.AddrFrom16(v4.As16())
		if !slices.Equal(names(Order(v4, cands)), names(Order(mapped, cands))) {
			t.Fatalf("%s and %s ordered differently", v4, mapped)
		}
	}
}

func TestSpreadAndMinimalMovement(t *testing.T) {
	const vips, nodes = 3000, 6
	var cands []Candidate
	for i := range nodes {
		cands = append(cands, Candidate{fmt.Sprintf("talos-w%d", i+1), fmt.Sprintf("pve%d", i%3)})
	}
	all := func(string) bool { return true }
	ips := make([]netip.Addr, vips)
	before := make([]string, vips)
	count := map[string]int{}
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{203, 0, byte(113 + i/256), byte(i)})
		before[i], _ = Elect(ips[i], cands, all)
		count[before[i]]++
	}
	// Expect vips/nodes = 500 each; allow ±15% (a uniform hash is well
	// inside that at this size).
	for _, c := range cands {
		if n := count[c.Name]; n < 425 || n > 575 {
			t.Errorf("%s won %d of %d VIPs, want 425..575 (counts %v)", c.Name, n, vips, count)
		}
	}
	// Kill one node: only its VIPs move, and they go to other hosts, spread
	// over more than one node.
	dead := cands[0].Name
	alive := func(n string) bool { return n != dead }
	moved := map[string]int{}
	for i, ip := range ips {
		after, _ := Elect(ip, cands, alive)
		if before[i] != dead && after != before[i] {
			t.Fatalf("%s moved from live %s to %s when %s died", ip, before[i], after, dead)
		}
		if before[i] == dead {
			moved[after]++
		}
	}
	for n := range moved {
		for _, c := range cands {
			if c.Name == n && c.Zone == cands[0].Zone {
				t.Errorf("VIPs of %s (%s) moved to %s on the same host", dead, cands[0].Zone, n)
			}
		}
	}
	if len(moved) < 2 {
		t.Errorf("all VIPs of %s moved to one node: %v", dead, moved)
	}
}

func BenchmarkElect1000VIPs50Nodes(b *testing.B) {
	var cands []Candidate
	for i := range 50 {
		cands = append(cands, Candidate{fmt.Sprintf("talos-worker-%02d", i), fmt.Sprintf("pve%d", i%5)})
	}
	all := func(string) bool { return true }
	for b.Loop() {
		for i := range 1000 {
			Elect(netip.AddrFrom4([4]byte{203, 0, 113 + byte(i/256), byte(i)}), cands, all)
		}
	}
}
