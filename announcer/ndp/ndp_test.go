package ndp

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
	vip, other := netlab.VIP6(0), netlab.VIP6(1)
	lab := l2lab.New(t, vip, other)
	ctx := context.Background()
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	// Without a responder nobody answers: the kernel does not answer
	// neighbor solicitations for addresses of kube-ipvs0 on eth0.
	if macs, err := lab.Client.Solicit(ctx, vip, 2, 150*time.Millisecond); err != nil || len(macs) != 0 {
		t.Fatalf("before any responder: answers %v, %v", macs, err)
	}
	r1, r2 := l2lab.Start(t, n1, New), l2lab.Start(t, n2, New)
	r1.SetIPs([]netip.Addr{vip, netlab.VIP4(0)}) // IPv4 ignored here
	r2.SetIPs(nil)

	macs, err := lab.Client.Solicit(ctx, vip, 3, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n1.MAC.String() {
		t.Fatalf("NDP answers for %s from %v, want exactly node1 %s", vip, macs, n1.MAC)
	}
	if macs, _ := lab.Client.Solicit(ctx, other, 2, 150*time.Millisecond); len(macs) != 0 {
		t.Fatalf("unwon VIP %s answered by %v", other, macs)
	}
	// The kernel's own resolution (multicast NS to the joined group) works.
	if err := lab.Client.Ping(ctx, vip, 2*time.Second); err != nil {
		t.Fatalf("ping %s: %v", vip, err)
	}
	nb, err := lab.Client.Neigh(ctx, vip)
	if err != nil {
		t.Fatal(err)
	}
	if nb.MAC.String() != n1.MAC.String() {
		t.Fatalf("client's neighbour entry for %s: %+v, want node1 %s", vip, nb, n1.MAC)
	}

	// Takeover: the unsolicited advertisement rewrites the client's entry.
	un0 := testutil.ToFloat64(advertisements.WithLabelValues("eth0", "unsolicited"))
	l2lab.Handover(t, lab.Client, vip, r1, r2, n2)
	if err := lab.Client.Ping(ctx, vip, 2*time.Second); err != nil {
		t.Fatalf("ping %s after takeover: %v", vip, err)
	}
	// Unicast re-check (NUD) of the cached entry reaches the new owner too:
	// force it by waiting the entry to STALE is slow, so probe directly.
	macs, err = lab.Client.Solicit(ctx, vip, 2, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n2.MAC.String() {
		t.Fatalf("after takeover answers from %v, want exactly node2 %s", macs, n2.MAC)
	}
	l2lab.WaitCount(t, advertisements.WithLabelValues("eth0", "unsolicited"), un0, len(UnsolicitedSchedule), "unsolicited advertisements")
}
