package allocator

import (
	"fmt"
	"testing"
)

// BenchmarkAssign measures assigning 1000 Services (one op = all 1000, on a
// fresh allocator) from an IPv4 /22, an IPv6 /64 and an IPv6 /48. The IPv6
// figures must stay close to the IPv4 one: allocation cost depends on the
// used addresses' layout, never on the pool's size.
func BenchmarkAssign(b *testing.B) {
	cases := []struct {
		name  string
		addrs string
		fam   Family
		avoid bool
	}{
		// In-memory only (no traffic): a /22 is larger than any documentation range.
		{"ipv4-22", "198.51.100.0/22", IPv4, false},
		{"ipv4-22-avoidBuggy", "198.51.100.0/22", IPv4, true},
		{"ipv6-64", "2001:db8::/64", IPv6, false},
		{"ipv6-48", "2001:db8::/48", IPv6, false},
	}
	keys := make([]Service, 1000)
	for i := range keys {
		keys[i] = Service{Key: ServiceKey{"ns", fmt.Sprintf("svc-%04d", i)}, Ports: []Port{{"TCP", 80}}}
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := pool(b, "p", c.addrs)
			p.AvoidBuggyIPs = c.avoid
			for b.Loop() {
				a := New()
				a.SetPools([]Pool{p})
				for _, s := range keys {
					s.IPFamilyPolicy, s.IPFamilies = SingleStack, []Family{c.fam}
					if _, err := a.Assign(s, nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/assign")
		})
	}
}

// BenchmarkAssignFragmented reassigns one Service in a pool where every
// other address of the first 20000 is used: the worst layout for a search
// that skips used runs (each run has length one).
func BenchmarkAssignFragmented(b *testing.B) {
	a := New()
	a.SetPools([]Pool{pool(b, "p", "2001:db8::/64")})
	for i := 0; i < 20000; i++ {
		s := Service{Key: ServiceKey{"ns", fmt.Sprintf("svc-%05d", i)}, IPFamilyPolicy: SingleStack, IPFamilies: []Family{IPv6}}
		if _, err := a.Assign(s, nil); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 20000; i += 2 {
		a.Release(ServiceKey{"ns", fmt.Sprintf("svc-%05d", i)})
	}
	// Fill the holes again, then measure one assign/release at the end.
	for i := 0; i < 20000; i += 2 {
		s := Service{Key: ServiceKey{"ns", fmt.Sprintf("svc-%05d", i)}, IPFamilyPolicy: SingleStack, IPFamilies: []Family{IPv6}}
		if _, err := a.Assign(s, nil); err != nil {
			b.Fatal(err)
		}
	}
	s := Service{Key: ServiceKey{"ns", "probe"}, IPFamilyPolicy: SingleStack, IPFamilies: []Family{IPv6}}
	for b.Loop() {
		if _, err := a.Assign(s, nil); err != nil {
			b.Fatal(err)
		}
		a.Release(s.Key)
	}
}
