package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/bird"
	"github.com/pvelb/pvelb/test/netlab"
)

// BenchmarkSetRoutesToBIRD measures the time from SetRoutes returning in the
// speaker process to the route being present on BIRD (advertise), and from
// SetRoutes without it to its absence (withdraw), over an established iBGP
// session in a network-namespace lab. It takes at least 20 samples whatever
// b.N is and reports the median and 90th percentile.
func BenchmarkSetRoutesToBIRD(b *testing.B) {
	bird.Require(b)
	lab := netlab.New(b, netlab.Options{Nodes: 1})
	router := lab.AddHost(b, "router", 1)
	br := bird.Start(b, router, birdPeers(lab.Nodes, func(int) string { return "" }))
	n := lab.Nodes[0]
	sp := startSpeaker(b, n, nodeConfig(n))
	if err := sp.setPeers(routerPeer(router)); err != nil {
		b.Fatal(err)
	}
	if err := bird.Eventually(20*time.Second, 50*time.Millisecond, func() error {
		st, err := br.ProtocolStates()
		if err == nil && st["n1"] != "Established" {
			err = fmt.Errorf("n1 is %q", st["n1"])
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	conn, err := br.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	waitFor := func(p netip.Prefix, present bool) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			has, err := conn.Has(p)
			if err != nil {
				return 0, err
			}
			if has == present {
				return time.Since(start), nil
			}
			time.Sleep(200 * time.Microsecond)
		}
		return 0, fmt.Errorf("%s present=%v not reached in 10s", p, present)
	}
	samples := max(b.N, 20)
	var adv, wd []time.Duration
	b.ResetTimer()
	for i := 0; i < samples; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i%100)}), 32)
		start := time.Now()
		if err := sp.setRoutes(Route{Prefix: p}); err != nil {
			b.Fatal(err)
		}
		if _, err := waitFor(p, true); err != nil {
			b.Fatal(err)
		}
		adv = append(adv, time.Since(start))
		start = time.Now()
		if err := sp.setRoutes(); err != nil {
			b.Fatal(err)
		}
		if _, err := waitFor(p, false); err != nil {
			b.Fatal(err)
		}
		wd = append(wd, time.Since(start))
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	slices.Sort(adv)
	slices.Sort(wd)
	b.ReportMetric(ms(adv[len(adv)/2]), "ms-advertise-median")
	b.ReportMetric(ms(adv[len(adv)*9/10]), "ms-advertise-p90")
	b.ReportMetric(ms(wd[len(wd)/2]), "ms-withdraw-median")
	b.ReportMetric(float64(len(adv)), "samples")
}
