package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/test/pvefw"
)

// benchRuns is how many Services each sub-benchmark measures; its median is
// reported. Run with -benchtime=1x: every invocation builds a lab.
const benchRuns = 5

// BenchmarkServiceToFirstHTTP measures what a user waits for: from
// `kubectl create service loadbalancer` to the first HTTP answer through
// the VIP from a client on the bridge, with the Proxmox firewall emulated
// at its real period (pve-firewall 10 s, proxmox-firewall 5 s), per-VIP
// admission and admitRanges. Each run waits a random part of the firewall's
// period, creates a new Service, polls it (GET with a 300 ms timeout, every
// 50 ms once the address is known), then deletes it and waits one firewall
// period before the next, with one other Service in the pool all along (a
// cluster's usual state). Also reported: when the Service had its address,
// when every VM's ipfilter-net0 in Proxmox admitted it and when an
// announcer answered for it.
func BenchmarkServiceToFirstHTTP(b *testing.B) {
	for _, v := range []pvefw.Variant{pvefw.Classic, pvefw.Nftables} {
		for _, ranges := range []bool{false, true} {
			name := v.String() + "/per-vip"
			if ranges {
				name = v.String() + "/admit-ranges"
			}
			b.Run(name, func(b *testing.B) {
				l := newTrafficLab(b, trafficOpts{Variant: v, FWPeriod: -1, AdmitRanges: ranges})
				period := l.fw.Options().Period
				// A Service that stays: admitRanges admits a range only while
				// it holds a VIP, so without one every run would measure a
				// pool's first Service.
				l.service(b, "resident")
				l.waitHTTP(b, tlURL(l.vips(b, "resident", 1)[0], 80), 2*period+30*time.Second)
				var addr, admitted, announce, toHTTP []float64
				b.ResetTimer()
				for i := range max(b.N, benchRuns) {
					ft := l.serviceToFirstHTTP(b, fmt.Sprintf("bench-%d", i), period)
					addr = append(addr, ft.addr.Seconds())
					admitted = append(admitted, ft.admitted.Seconds())
					announce = append(announce, ft.announce.Seconds())
					toHTTP = append(toHTTP, ft.http.Seconds())
				}
				b.StopTimer()
				b.ReportMetric(median(toHTTP), "s-to-http-median")
				b.ReportMetric(slices.Min(toHTTP), "s-to-http-min")
				b.ReportMetric(slices.Max(toHTTP), "s-to-http-max")
				b.ReportMetric(median(addr), "s-to-address-median")
				b.ReportMetric(median(admitted), "s-to-ipsets-median")
				b.ReportMetric(median(announce), "s-to-announced-median")
				b.Logf("%s (period %s), s from creation: address %v, in every VM's IPSet %v, announced %v, first HTTP answer %v",
					name, period, addr, admitted, announce, toHTTP)
			})
		}
	}
}

// firstTimes are the moments, from the Service's creation, one run saw
// each step of the path first.
type firstTimes struct {
	addr     time.Duration // status has the address
	admitted time.Duration // every VM's ipfilter-net0 in Proxmox admits it
	announce time.Duration // an announcer says it answers for it
	http     time.Duration // the client got an answer through it
}

// serviceToFirstHTTP creates one Service and returns when each step first
// happened, then removes it. The steps are watched from a second goroutine
// every 20 ms, so the HTTP tries (300 ms timeout) do not blur them.
func (l *trafficLab) serviceToFirstHTTP(b *testing.B, name string, period time.Duration) firstTimes {
	// A random phase against the firewall's loop: runs a fixed time apart
	// would all meet its pass at the same point and report one figure.
	time.Sleep(rand.N(period))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.net.Client.FlushNeigh(ctx); err != nil {
		b.Fatal(err)
	}
	var (
		mu  sync.Mutex
		ft  firstTimes
		vip netip.Addr
	)
	// Announcers already answer for the resident Service: the new one is
	// announced when the total grows.
	baseline := l.announcedTotal()
	t0 := time.Now()
	l.service(b, name)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ctx.Err() == nil {
			mu.Lock()
			done := ft.http != 0
			mu.Unlock()
			if done {
				return
			}
			now := time.Since(t0)
			if !vip.IsValid() {
				if s, err := l.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{}); err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
					mu.Lock()
					vip, ft.addr = netip.MustParseAddr(s.Status.LoadBalancer.Ingress[0].IP), now
					mu.Unlock()
				}
			}
			if vip.IsValid() && ft.admitted == 0 && l.allVMsAdmit(vip) {
				ft.admitted = now
			}
			if vip.IsValid() && ft.announce == 0 && l.announcedTotal() > baseline {
				ft.announce = now
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for ctx.Err() == nil {
		mu.Lock()
		ip := vip
		mu.Unlock()
		if ip.IsValid() {
			if _, err := l.get(ctx, tlURL(ip, 80), 300*time.Millisecond); err == nil {
				mu.Lock()
				ft.http = time.Since(t0)
				mu.Unlock()
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	<-watched
	if ft.http == 0 {
		b.Fatalf("%s: no answer through %s within 2 minutes (%+v)", name, vip, ft)
	}
	l.deleteService(b, name)
	// The next run starts with the firewall having applied the release.
	time.Sleep(period + time.Second)
	return ft
}

// announcedTotal is how many addresses the announcers answer for, summed
// over the nodes (-1 when one cannot be read).
func (l *trafficLab) announcedTotal() int {
	total := 0
	for _, n := range l.net.Nodes {
		v, err := l.scrape(n, "pvelb_announcer_announced_ips")
		if err != nil {
			return -1
		}
		total += int(v)
	}
	return total
}

// allVMsAdmit says whether the ipfilter-net0 of every node's VM in the
// simulator holds ip, as an address or in a range (admitRanges).
func (l *trafficLab) allVMsAdmit(ip netip.Addr) bool {
	for _, n := range l.net.Nodes {
		found := false
		for _, e := range l.sim.IPSetEntries(l.vmScope(n.Name), vmSet) {
			if p, err := netip.ParsePrefix(e.CIDR); err == nil && p.Contains(ip) {
				found = true
			} else if a, err := netip.ParseAddr(e.CIDR); err == nil && a == ip {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
