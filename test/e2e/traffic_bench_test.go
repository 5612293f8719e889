package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/test/pvefw"
)

// benchRuns is how many Services each sub-benchmark measures; its median is
// reported. Run with -benchtime=1x: every invocation builds a lab.
const benchRuns = 3

// BenchmarkServiceToFirstHTTP measures what a user waits for: from
// `kubectl create service loadbalancer` to the first HTTP answer through
// the VIP from a client on the bridge, with the Proxmox firewall emulated
// at its real period (pve-firewall 10 s, proxmox-firewall 5 s), per-VIP
// admission and admitRanges. Each run creates a new Service, polls it
// (GET with a 300 ms timeout, every 50 ms once the address is known), then
// deletes it and waits one firewall period before the next.
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
				// Let the lab's own start-up passes settle.
				time.Sleep(period)
				var toAddr, toHTTP []float64
				b.ResetTimer()
				for i := range max(b.N, benchRuns) {
					a, h := l.serviceToFirstHTTP(b, fmt.Sprintf("bench-%d", i), period)
					toAddr, toHTTP = append(toAddr, a.Seconds()), append(toHTTP, h.Seconds())
				}
				b.StopTimer()
				b.ReportMetric(median(toHTTP), "s-to-http-median")
				b.ReportMetric(slices.Min(toHTTP), "s-to-http-min")
				b.ReportMetric(slices.Max(toHTTP), "s-to-http-max")
				b.ReportMetric(median(toAddr), "s-to-address-median")
				b.Logf("%s (period %s): to address %v s, to first HTTP %v s", name, period, toAddr, toHTTP)
			})
		}
	}
}

// serviceToFirstHTTP creates one Service and returns how long until it had
// an address and until the first answer through it, then removes it.
func (l *trafficLab) serviceToFirstHTTP(b *testing.B, name string, period time.Duration) (toAddr, toHTTP time.Duration) {
	ctx := context.Background()
	if err := l.net.Client.FlushNeigh(ctx); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	l.service(b, name)
	url := ""
	deadline := t0.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if url == "" {
			s, err := l.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if in := s.Status.LoadBalancer.Ingress; len(in) > 0 {
				toAddr = time.Since(t0)
				url = "http://" + in[0].IP + "/"
			}
		}
		if url != "" {
			if _, err := l.get(ctx, url, 300*time.Millisecond); err == nil {
				toHTTP = time.Since(t0)
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if toHTTP == 0 {
		b.Fatalf("%s: no answer through %q within 2 minutes", name, url)
	}
	if err := l.kube.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	Eventually(b, time.Minute, name+" gone", func(ctx context.Context) error {
		_, err := l.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errorf("still there (%v)", err)
	})
	// The next run starts with the firewall having applied the release.
	time.Sleep(period + time.Second)
	return toAddr, toHTTP
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
