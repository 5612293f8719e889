package arp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/announcer/claimlog"
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
	claims, t0 := claimlog.New(), time.Now()
	r1.SetClaimLog(claims)
	l2lab.Handover(t, lab.Client, vip, r1, r2, n2)
	// The old owner recorded who took the VIP over, for /status.
	if got := claims.Since(t0); len(got) == 0 || got[0].IP != vip || got[0].MAC != n2.MAC.String() || got[0].Interface != "eth0" {
		t.Errorf("claim log after the takeover: %+v; want %s claimed by %s on eth0", got, vip, n2.MAC)
	}
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

// A local link-down (ifdown, a NIC reset, a VM's link toggled in Proxmox)
// makes the kernel report ENETDOWN once on the packet socket; the responder
// must ride it out and answer again when the link is back, not die while its
// node stays elected.
func TestSurvivesLocalLinkDown(t *testing.T) {
	vip := netlab.VIP4(0)
	lab := l2lab.New(t, vip)
	ctx := context.Background()
	n1 := lab.Nodes[0]
	r1 := l2lab.Start(t, n1, New)
	r1.SetIPs([]netip.Addr{vip})
	for _, state := range []string{"down", "up"} {
		if out, err := n1.Run(ctx, "ip", "link", "set", n1.Link, state); err != nil {
			t.Fatalf("link %s: %v: %s", state, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var macs []net.HardwareAddr
	deadline := time.Now().Add(3 * time.Second)
	for len(macs) == 0 && time.Now().Before(deadline) {
		macs, _ = lab.Client.Arping(ctx, vip, 1, 150*time.Millisecond)
	}
	if len(macs) != 1 || macs[0].String() != n1.MAC.String() {
		t.Fatalf("after link down/up, ARP replies for %s from %v, want node1 %s", vip, macs, n1.MAC)
	}
}

// A frame the ARP parser rejects (here an IP address length of 5) can come
// from any host on the segment; it must be dropped, not stop the responder.
func TestSurvivesMalformedFrame(t *testing.T) {
	vip := netlab.VIP4(0)
	lab := l2lab.New(t, vip)
	ctx := context.Background()
	n1 := lab.Nodes[0]
	r1 := l2lab.Start(t, n1, New)
	r1.SetIPs([]netip.Addr{vip})

	frame := append(append(append([]byte{}, ethernet.Broadcast...), lab.Client.MAC...), 0x08, 0x06)
	frame = append(frame, 0, 1, 8, 0, 6, 5, 0, 1) // htype 1, ptype IPv4, hlen 6, plen 5, request
	frame = append(frame, make([]byte, 6+5+6+5)...)
	err := netlab.InNetns(lab.Client.Netns, func() error {
		ifi, err := net.InterfaceByName(lab.Client.Link)
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	macs, err := lab.Client.Arping(ctx, vip, 2, 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(macs) != 1 || macs[0].String() != n1.MAC.String() {
		t.Fatalf("after a malformed frame, ARP replies for %s from %v, want node1 %s", vip, macs, n1.MAC)
	}
}
