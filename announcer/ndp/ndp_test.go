package ndp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/announcer/claimlog"
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
	claims, t0 := claimlog.New(), time.Now()
	r1.SetClaimLog(claims)
	l2lab.Handover(t, lab.Client, vip, r1, r2, n2)
	// The old owner recorded who took the VIP over, for /status.
	if got := claims.Since(t0); len(got) == 0 || got[0].IP != vip || got[0].MAC != n2.MAC.String() || got[0].Interface != "eth0" {
		t.Errorf("claim log after the takeover: %+v; want %s claimed by %s on eth0", got, vip, n2.MAC)
	}
	if err := lab.Client.Ping(ctx, vip, 2*time.Second); err != nil {
		t.Fatalf("ping %s after takeover: %v", vip, err)
	}
	// Unicast re-check (NUD) of the cached entry reaches the new owner too:
	// waiting for the entry to go STALE is slow, so probe directly.
	macs, err = lab.Client.Probe(ctx, vip, n2.MAC, 2, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n2.MAC.String() {
		t.Fatalf("after takeover answers from %v, want exactly node2 %s", macs, n2.MAC)
	}
	l2lab.WaitCount(t, advertisements.WithLabelValues("eth0", "unsolicited"), un0, len(UnsolicitedSchedule), "unsolicited advertisements")
}

// With kube-proxy in iptables or nftables mode a VIP is bound to no
// interface of the node. A client's neighbour entry for it is then re-checked
// (NUD) by solicitations unicast to the VIP itself at the node's MAC, which
// the kernel's IPv6 input drops as not addressed to this host: unless the
// responder reads them off the link, the client marks the entry FAILED and
// loses the VIP once every reachable time.
func TestAnswersUnicastSolicitationsForVIPsNotBoundLocally(t *testing.T) {
	netlab.RequireTools(t, "ping")
	lab := netlab.New(t, netlab.Options{Nodes: 1}) // no kube-ipvs0, no VIP bound
	ctx := context.Background()
	n1, client := lab.Nodes[0], lab.Client
	vip := netlab.VIP6(2)
	// kube-proxy nodes forward; a forwarding node must still not confuse
	// its own resolution of the VIP with a client's.
	if err := n1.Sysctl("net.ipv6.conf.all.forwarding=1"); err != nil {
		t.Fatal(err)
	}
	r := l2lab.Start(t, n1, New)
	r.SetIPs([]netip.Addr{vip})
	errs0 := testutil.ToFloat64(sendErrors.WithLabelValues("eth0"))

	// First resolution: multicast to the solicited-node group.
	if macs, err := client.Solicit(ctx, vip, 2, 150*time.Millisecond); err != nil || len(macs) != 1 || macs[0].String() != n1.MAC.String() {
		t.Fatalf("multicast solicitation for %s answered by %v, %v; want node1 %s", vip, macs, err, n1.MAC)
	}
	// The re-check, on the wire: unicast to the VIP at node1's MAC.
	uni0 := testutil.ToFloat64(solicitations.WithLabelValues("eth0", "unicast"))
	sol0 := testutil.ToFloat64(advertisements.WithLabelValues("eth0", "solicited"))
	if macs, err := client.Probe(ctx, vip, n1.MAC, 2, 150*time.Millisecond); err != nil || len(macs) != 1 || macs[0].String() != n1.MAC.String() {
		t.Fatalf("unicast solicitation for %s answered by %v, %v; want node1 %s", vip, macs, err, n1.MAC)
	}
	if got := testutil.ToFloat64(solicitations.WithLabelValues("eth0", "unicast")) - uni0; got != 2 {
		t.Errorf("unicast solicitations counted: %v, want 2", got)
	}
	if got := testutil.ToFloat64(advertisements.WithLabelValues("eth0", "solicited")) - sol0; got != 2 {
		t.Errorf("solicited advertisements: %v, want 2", got)
	}

	// The client's own kernel: resolve the VIP (nobody answers the echo,
	// nothing serves it in this lab; the neighbour entry is what counts),
	// then force NUD. Unanswered, PROBE ends FAILED after 3 probes 1s apart.
	_ = client.Ping(ctx, vip, time.Second)
	if nb, err := client.Neigh(ctx, vip); err != nil || nb.MAC.String() != n1.MAC.String() {
		t.Fatalf("client's entry for %s after resolving: %+v, %v; want node1 %s", vip, nb, err, n1.MAC)
	}
	if _, err := client.Run(ctx, "ip", "-6", "neigh", "change", vip.String(), "dev", client.Link, "lladdr", n1.MAC.String(), "nud", "probe"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2500 * time.Millisecond)
	for {
		nb, err := client.Neigh(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		if nb.State == "REACHABLE" && nb.MAC.String() == n1.MAC.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client's entry for %s after NUD: %+v, want REACHABLE at node1 %s", vip, nb, n1.MAC)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := testutil.ToFloat64(sendErrors.WithLabelValues("eth0")) - errs0; got != 0 {
		t.Errorf("send errors: %v", got)
	}
}
