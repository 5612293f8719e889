// Package l2lab is the network lab the ARP and NDP responder tests share:
// nodes that hold VIPs the way kube-proxy does, responders run inside their
// namespaces, and the SIGTERM-style handover both protocols must survive.
// Only tests import it; it needs root and network namespaces (netlab).
package l2lab

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/test/netlab"
)

// Responder is what arp.Responder and ndp.Responder have in common.
type Responder interface {
	Run(ctx context.Context) error
	Close() error
	SetIPs(ips []netip.Addr)
	ClaimedSince(ip netip.Addr, t time.Time) bool
}

// New builds a lab of two nodes and a client (with ping) where every node
// holds every one of vips, as kube-proxy binds every LoadBalancer IP on every
// node: only a responder decides which node answers.
func New(t *testing.T, vips ...netip.Addr) *netlab.Lab {
	t.Helper()
	netlab.RequireTools(t, "ping")
	lab := netlab.New(t, netlab.Options{Nodes: 2, StrictARP: true})
	for _, n := range lab.Nodes {
		for _, ip := range vips {
			if err := n.AddVIP(ip); err != nil {
				t.Fatal(err)
			}
		}
	}
	return lab
}

// Start opens a responder with open(h.Link) inside h's namespace (its socket
// stays there) and runs it until the test ends, failing the test if Run
// returns an error.
func Start[R Responder](t *testing.T, h *netlab.Host, open func(ifname string) (R, error)) R {
	t.Helper()
	var r R
	if err := netlab.InNetns(h.Netns, func() (err error) { r, err = open(h.Link); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = r.Close()
	})
	return r
}

// Handover moves vip from old to next as on SIGTERM: next starts while old
// still answers, old must see next's takeover packet within 300ms and only
// then stops, and the client's neighbour entry must move to next's MAC within
// 400ms without the client asking. It returns when the entry moved.
func Handover(t *testing.T, client *netlab.Host, vip netip.Addr, old, next Responder, nextHost *netlab.Host) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now()
	next.SetIPs([]netip.Addr{vip})
	start := time.Now()
	for !old.ClaimedSince(vip, t0) {
		if time.Since(t0) > 300*time.Millisecond {
			t.Fatal("node1 did not see node2's takeover packet within 300ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
	old.SetIPs(nil)
	for {
		nb, err := client.Neigh(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		if nb.MAC.String() == nextHost.MAC.String() {
			break
		}
		if time.Since(start) > 400*time.Millisecond {
			t.Fatalf("client still has %+v for %s 400ms after takeover, want node2 %s", nb, vip, nextHost.MAC)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("client moved to node2 %s after takeover", time.Since(start).Round(time.Millisecond))
}

// WaitCount waits up to 2s for counter c to have grown by want since it read
// from; a takeover burst is spread over about a second.
func WaitCount(t *testing.T, c prometheus.Collector, from float64, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(c)-from < float64(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v, want %d", what, testutil.ToFloat64(c)-from, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
