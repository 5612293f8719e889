package allocator

import (
	"net/netip"
	"testing"
)

// Holding and the allocator's own PoolOf agree on every case: pvelb-ccm
// records PoolOf, the announcer and the firewall use Holding.
func TestHolding(t *testing.T) {
	withPrio := func(p Pool, prio int32) Pool { p.Priority = prio; return p }
	buggy := func(p Pool) Pool { p.AvoidBuggyIPs = true; return p }
	for _, tt := range []struct {
		name  string
		pools []Pool
		ip    string
		want  string
	}{
		{"no pools", nil, "192.0.2.1", ""},
		{"in one pool", []Pool{pool(t, "a", "192.0.2.0/28"), pool(t, "b", "198.51.100.0/28")}, "198.51.100.3", "b"},
		{"in none", []Pool{pool(t, "a", "192.0.2.0/28")}, "192.0.2.16", ""},
		{"IPv6 range", []Pool{pool(t, "v6", "2001:db8::200-2001:db8::2ff")}, "2001:db8::2aa", "v6"},
		{"renamed over the same range: the new name", []Pool{pool(t, "new", "192.0.2.0/28")}, "192.0.2.5", "new"},
		{"overlap: lower priority value wins (MetalLB's order)", []Pool{withPrio(pool(t, "a", "192.0.2.0/24"), 5), withPrio(pool(t, "b", "192.0.2.0/28"), 1)}, "192.0.2.5", "b"},
		{"overlap: a pool without priority after one with any", []Pool{withPrio(pool(t, "a", "192.0.2.0/24"), 1000), pool(t, "aa", "192.0.2.0/28")}, "192.0.2.5", "a"},
		{"overlap, same priority: first by name", []Pool{pool(t, "zz", "192.0.2.0/24"), pool(t, "aa", "192.0.2.0/28")}, "192.0.2.5", "aa"},
		{"a buggy address is not held by an avoidBuggyIPs pool", []Pool{buggy(pool(t, "a", "192.0.2.0/24"))}, "192.0.2.255", ""},
		{"refused pools still hold their addresses", []Pool{func() Pool { p := pool(t, "a", "192.0.2.0/24"); p.Usable = false; return p }()}, "192.0.2.7", "a"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			if got := Holding(tt.pools, ip); got != tt.want {
				t.Errorf("Holding = %q, want %q", got, tt.want)
			}
			a := New()
			a.SetPools(tt.pools)
			if got := a.PoolOf(ip); got != tt.want {
				t.Errorf("Allocator.PoolOf = %q, want %q", got, tt.want)
			}
		})
	}
}
