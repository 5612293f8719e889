package arp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/test/netlab"
)

// startResponder opens a responder inside the node's namespace and runs it
// until the test ends.
func startResponder(t *testing.T, h *netlab.Host) *Responder {
	t.Helper()
	var r *Responder
	if err := netlab.InNetns(h.Netns, func() (err error) { r, err = New(h.Link); return err }); err != nil {
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

func TestOnlyTheWinnerAnswersAndTakeoverMovesClients(t *testing.T) {
	netlab.RequireTools(t, "ping")
	lab := netlab.New(t, netlab.Options{Nodes: 2, StrictARP: true})
	ctx := context.Background()
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	vip, other := netlab.VIP4(0), netlab.VIP4(1)
	for _, n := range lab.Nodes {
		// kube-proxy binds every LoadBalancer IP on every node.
		if err := n.AddVIP(vip); err != nil {
			t.Fatal(err)
		}
		if err := n.AddVIP(other); err != nil {
			t.Fatal(err)
		}
	}
	r1, r2 := startResponder(t, n1), startResponder(t, n2)
	if r1.HardwareAddr().String() != n1.MAC.String() {
		t.Fatalf("responder MAC %s, node MAC %s", r1.HardwareAddr(), n1.MAC)
	}
	r1.SetIPs([]netip.Addr{vip, netip.MustParseAddr("2001:db8:0:1::200")}) // IPv6 ignored here
	r2.SetIPs(nil)

	replies0 := testutil.ToFloat64(repliesSent.WithLabelValues("eth0"))
	macs, err := lab.Client.Arping(ctx, vip, 3, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n1.MAC.String() {
		t.Fatalf("ARP replies for %s from %v, want exactly node1 %s", vip, macs, n1.MAC)
	}
	if d := testutil.ToFloat64(repliesSent.WithLabelValues("eth0")) - replies0; d < 3 {
		t.Errorf("replies counter grew by %v for 3 requests", d)
	}
	// A VIP nobody won stays silent although every node holds it.
	if macs, _ := lab.Client.Arping(ctx, other, 2, 150*time.Millisecond); len(macs) != 0 {
		t.Fatalf("unwon VIP %s answered by %v", other, macs)
	}
	// The kernel's own resolution works and caches node1.
	if err := lab.Client.Ping(ctx, vip, time.Second); err != nil {
		t.Fatalf("ping %s: %v", vip, err)
	}
	nb, err := lab.Client.Neigh(ctx, vip)
	if err != nil {
		t.Fatal(err)
	}
	if nb.MAC.String() != n1.MAC.String() {
		t.Fatalf("client's neighbour entry for %s: %+v, want node1 %s", vip, nb, n1.MAC)
	}

	// Takeover: node2 wins. Its first gratuitous ARP must rewrite the
	// client's cached entry without the client asking.
	garp0 := testutil.ToFloat64(gratuitousSent.WithLabelValues("eth0"))
	// Handover as on SIGTERM: the successor starts while the old owner
	// still answers, and the old owner sees the successor's claim.
	t0 := time.Now()
	r2.SetIPs([]netip.Addr{vip})
	start := time.Now()
	for !r1.ClaimedSince(vip, t0) {
		if time.Since(t0) > 300*time.Millisecond {
			t.Fatal("node1 did not see node2's takeover packet within 300ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r1.SetIPs(nil)
	for {
		nb, err = lab.Client.Neigh(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		if nb.MAC.String() == n2.MAC.String() {
			break
		}
		if time.Since(start) > 400*time.Millisecond {
			t.Fatalf("client still has %+v for %s 400ms after takeover, want node2 %s", nb, vip, n2.MAC)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("client moved to node2 %s after takeover", time.Since(start).Round(time.Millisecond))
	if err := lab.Client.Ping(ctx, vip, time.Second); err != nil {
		t.Fatalf("ping %s after takeover: %v", vip, err)
	}
	macs, err = lab.Client.Arping(ctx, vip, 2, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n2.MAC.String() {
		t.Fatalf("after takeover replies from %v, want exactly node2 %s", macs, n2.MAC)
	}
	// The whole burst goes out.
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(gratuitousSent.WithLabelValues("eth0"))-garp0 < float64(len(GratuitousSchedule)) {
		if time.Now().After(deadline) {
			t.Fatalf("gratuitous ARP sent %v, want %d", testutil.ToFloat64(gratuitousSent.WithLabelValues("eth0"))-garp0, len(GratuitousSchedule))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New("pvelb-nope0"); err == nil {
		t.Fatal("New on a missing interface succeeded")
	}
}
