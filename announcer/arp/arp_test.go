package arp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/announcer/internal/l2lab"
	"github.com/pvelb/pvelb/test/netlab"
)

func TestOnlyTheWinnerAnswersAndTakeoverMovesClients(t *testing.T) {
	vip, other := netlab.VIP4(0), netlab.VIP4(1)
	lab := l2lab.New(t, vip, other)
	ctx := context.Background()
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	r1, r2 := l2lab.Start(t, n1, New), l2lab.Start(t, n2, New)
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
	l2lab.Handover(t, lab.Client, vip, r1, r2, n2)
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
	l2lab.WaitCount(t, gratuitousSent.WithLabelValues("eth0"), garp0, len(GratuitousSchedule), "gratuitous ARP sent")
}

func TestNewErrors(t *testing.T) {
	if _, err := New("pvelb-nope0"); err == nil {
		t.Fatal("New on a missing interface succeeded")
	}
}
