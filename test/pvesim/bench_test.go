package pvesim

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkEntryAddDelete measures one IPSet entry add plus delete over
// HTTPS, the simulator's cost per firewall write pair.
func BenchmarkEntryAddDelete(b *testing.B) {
	ts, c := newSim(b, Options{})
	ts.SeedIPSet(clusterSc(), "vips")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cidr := fmt.Sprintf("198.51.100.%d", i%250+1)
		if r := c.do("POST", "/cluster/firewall/ipset/vips", vals("cidr", cidr)); r.Code != 200 {
			b.Fatal(r.Status)
		}
		if r := c.do("DELETE", "/cluster/firewall/ipset/vips/"+cidr, nil); r.Code != 200 {
			b.Fatal(r.Status)
		}
	}
}

// BenchmarkListEntries measures reading a 200-entry set.
func BenchmarkListEntries(b *testing.B) {
	ts, c := newSim(b, Options{})
	for i := 0; i < 200; i++ {
		ts.SeedIPSet(clusterSc(), "vips", ipEntryFor(i))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := c.do("GET", "/cluster/firewall/ipset/vips", nil); r.Code != 200 {
			b.Fatal(r.Status)
		}
	}
}

func TestLatencyOption(t *testing.T) {
	_, c := newSim(t, Options{Latency: 40 * time.Millisecond})
	start := time.Now()
	c.do("GET", "/version", nil).want(t, "200 OK")
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("request took %v, less than the configured latency", d)
	}
}
