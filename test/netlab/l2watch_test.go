package netlab

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// sendARP sends one ARP packet from h's lab link as an announcer would:
// sender is h's MAC and ip, target (tmac, tip), in a frame to ethDst.
func sendARP(t *testing.T, h *Host, op arp.Operation, ip netip.Addr, tmac net.HardwareAddr, tip netip.Addr, ethDst net.HardwareAddr) {
	t.Helper()
	var c *arp.Client
	if err := InNetns(h.Netns, func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err == nil {
			c, err = arp.Dial(ifi)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := arp.NewPacket(op, h.MAC, ip, tmac, tip)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteTo(p, ethDst); err != nil {
		t.Fatal(err)
	}
}

// garp sends a gratuitous ARP request for ip from h.
func garp(t *testing.T, h *Host, ip netip.Addr) {
	t.Helper()
	sendARP(t, h, arp.OperationRequest, ip, ethernet.Broadcast, ip, ethernet.Broadcast)
}

// sendNA sends a neighbor advertisement for target, with h's MAC as target
// link-layer address, to dst.
func sendNA(t *testing.T, h *Host, target, dst netip.Addr, solicited bool) {
	t.Helper()
	var ifi *net.Interface
	var ic *icmp.PacketConn
	if err := InNetns(h.Netns, func() (err error) {
		if ifi, err = net.InterfaceByName(h.Link); err == nil {
			ic, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	b, err := ndp.MarshalMessage(&ndp.NeighborAdvertisement{
		Solicited: solicited, Override: true, TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: h.MAC}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, IfIndex: ifi.Index}
	if _, err := ic.IPv6PacketConn().WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		t.Fatal(err)
	}
}

// waitAnswer waits until m has recorded n answers for vip from mac since
// since (zero: since the start).
func waitAnswer(t *testing.T, m *Monitor, vip netip.Addr, mac net.HardwareAddr, since time.Time, n int) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seen := 0
	ev, err := m.Wait(ctx, func(e Event) bool {
		if a, ok := e.Answer(); ok && a == vip && e.MAC.String() == mac.String() && !e.Time.Before(since) {
			seen++
		}
		return seen == n
	})
	if err != nil {
		t.Fatalf("answer %d for %s from %s: %v\n%s", n, vip, mac, err, m.Timeline(vip))
	}
	return ev
}

func watch(t *testing.T, open func() (*Monitor, error)) *Monitor {
	t.Helper()
	m, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func TestMonitorRecordsAnswers(t *testing.T) {
	lab := New(t, Options{Nodes: 2})
	n1, n2, cli := lab.Nodes[0], lab.Nodes[1], lab.Client
	bridge := watch(t, lab.WatchBridge)
	client := watch(t, cli.Watch)
	v4, v6 := VIP4(0), VIP6(0)

	// A unicast reply from node1 to the client: on the bridge only because
	// the monitor made it promiscuous.
	sendARP(t, n1, arp.OperationReply, v4, cli.MAC, cli.IPv4.Addr(), cli.MAC)
	garp(t, n2, v4)
	sendNA(t, n1, v6, netip.MustParseAddr("ff02::1"), false)
	sendNA(t, n2, v6, cli.IPv6.Addr(), true)

	for _, m := range []*Monitor{bridge, client} {
		for _, tt := range []struct {
			host       *Host
			vip        netip.Addr
			kind       Kind
			gratuitous bool
		}{
			{n1, v4, ARPReply, false},
			{n2, v4, ARPRequest, true},
			{n1, v6, NeighborAdvertisement, true},
			{n2, v6, NeighborAdvertisement, false},
		} {
			e := waitAnswer(t, m, tt.vip, tt.host.MAC, time.Time{}, 1)
			if e.Kind != tt.kind || e.Gratuitous() != tt.gratuitous || e.EthSrc.String() != tt.host.MAC.String() {
				t.Errorf("%s: answer for %s from %s = %v (gratuitous %v), want %v (gratuitous %v) from eth %s",
					m.where, tt.vip, tt.host.Name, e, e.Gratuitous(), tt.kind, tt.gratuitous, tt.host.MAC)
			}
		}
		for _, vip := range []netip.Addr{v4, v6} {
			if got, want := macStrings(m.AnswerMACs(vip, time.Time{}, time.Time{})), macStrings([]net.HardwareAddr{n1.MAC, n2.MAC}); !slices.Equal(got, want) {
				t.Errorf("%s: AnswerMACs(%s) = %v, want %v", m.where, vip, got, want)
			}
			if s := m.SplitAnswers(vip, time.Second); len(s) != 0 {
				t.Errorf("%s: SplitAnswers(%s) = %v after one answer from each node", m.where, vip, s)
			}
		}
		g4, g6 := m.Gratuitous(v4), m.Gratuitous(v6)
		if len(g4) != 1 || len(g4[n2.MAC.String()]) != 1 || len(g6) != 1 || len(g6[n1.MAC.String()]) != 1 {
			t.Errorf("%s: gratuitous packets %v for %s and %v for %s, want one from %s and one from %s", m.where, g4, v4, g6, v6, n2.Name, n1.Name)
		}
		t.Logf("%s:\n%s%s", m.where, m.Timeline(v4), m.Timeline(v6))
	}

	// Monitors started after the lab see only what follows; the lab stops
	// them on Close, and their recording stays readable.
	lab.Close()
	if err := bridge.Close(); err != nil {
		t.Errorf("bridge monitor after the lab closed: %v", err)
	}
	if len(bridge.Events()) == 0 {
		t.Error("bridge monitor lost its events on Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Wait(ctx, func(Event) bool { return false }); err == nil || ctx.Err() != nil {
		t.Errorf("Wait on a closed monitor = %v, want an immediate error", err)
	}
}

func TestSplitAnswersOnTheWire(t *testing.T) {
	lab := New(t, Options{Nodes: 2})
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	m := watch(t, lab.WatchBridge)
	interleaved, handover := VIP4(1), VIP4(2)
	// Each packet is on record before the next leaves, so the timeline's
	// order is the sending order even with the senders on different CPUs.
	count := map[string]int{}
	announce := func(h *Host, vip netip.Addr) {
		garp(t, h, vip)
		key := h.Name + vip.String()
		count[key]++
		waitAnswer(t, m, vip, h.MAC, time.Time{}, count[key])
	}
	announce(n1, interleaved)
	announce(n2, interleaved)
	announce(n1, interleaved)
	announce(n1, handover)
	announce(n1, handover)
	announce(n2, handover)
	announce(n2, handover)

	const overlap = 2 * time.Second // far longer than the whole exchange
	splits := m.SplitAnswers(interleaved, overlap)
	if len(splits) != 1 || splits[0].Answers != 3 || !slices.Equal(macStrings(splits[0].MACs), macStrings([]net.HardwareAddr{n1.MAC, n2.MAC})) {
		t.Errorf("SplitAnswers(%s) = %v, want one split of 3 answers from %s and %s\n%s", interleaved, splits, n1.Name, n2.Name, m.Timeline(interleaved))
	}
	if s := m.SplitAnswers(handover, overlap); len(s) != 0 {
		t.Errorf("SplitAnswers(%s) = %v for a clean handover\n%s", handover, s, m.Timeline(handover))
	}
}

// setAddr adds (or with del, removes) ip on h's lab link, where the kernel
// answers ARP and NDP for it like any address of its own.
func setAddr(t *testing.T, h *Host, ip netip.Addr, del bool) {
	t.Helper()
	cmd := "addr add " + netip.PrefixFrom(ip, ip.BitLen()).String() + " dev " + h.Link
	if del {
		cmd = "addr del " + netip.PrefixFrom(ip, ip.BitLen()).String() + " dev " + h.Link
	} else if ip.Is6() {
		cmd += " nodad"
	}
	if err := batch(h.Netns, cmd); err != nil {
		t.Fatal(err)
	}
}

func TestProberShowsWhoAnswers(t *testing.T) {
	lab := New(t, Options{Nodes: 2})
	n1, n2, cli := lab.Nodes[0], lab.Nodes[1], lab.Client
	m := watch(t, lab.WatchBridge)
	vips := []netip.Addr{VIP4(3), VIP6(3)}
	const every = 20 * time.Millisecond
	const overlap = 3 * every

	if _, err := cli.ProbeVIPs(context.Background(), []netip.Addr{netip.MustParseAddr("198.51.100.1")}, every); err == nil {
		t.Error("ProbeVIPs accepted an address outside the lab")
	}
	if _, err := cli.ProbeVIPs(context.Background(), vips, 0); err == nil {
		t.Error("ProbeVIPs accepted a zero interval")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := cli.ProbeVIPs(ctx, vips, every)
	if err != nil {
		t.Fatal(err)
	}

	// Nobody holds the VIPs: only the questions are on the wire.
	for _, vip := range vips {
		if _, err := m.Wait(ctx, func(e Event) bool {
			return (e.Kind == ARPRequest || e.Kind == NeighborSolicitation) && e.TargetIP == vip && e.MAC.String() == cli.MAC.String()
		}); err != nil {
			t.Fatalf("no probe for %s: %v", vip, err)
		}
	}
	// The kernel answers for an address on the link, as an announcer would.
	// A phase changes who holds the VIPs (removing first: a handover) and
	// waits for a few answers from every new holder.
	type window struct{ before, after time.Time }
	phase := func(name string, add, del []*Host) window {
		t.Logf("phase %s", name)
		w := window{before: time.Now()}
		for _, vip := range vips {
			for _, h := range del {
				setAddr(t, h, vip, true)
			}
			for _, h := range add {
				setAddr(t, h, vip, false)
			}
		}
		w.after = time.Now()
		for _, vip := range vips {
			for _, h := range add {
				waitAnswer(t, m, vip, h.MAC, w.after, 3)
			}
		}
		return w
	}
	t1 := phase("node1 holds", []*Host{n1}, nil)
	t2 := phase("node2 takes over", []*Host{n2}, []*Host{n1})
	t3 := phase("both hold", []*Host{n1}, nil)
	for range 5 { // both answer every round: they interleave within a round or two
		if len(m.SplitAnswers(vips[0], overlap)) > 0 && len(m.SplitAnswers(vips[1], overlap)) > 0 {
			break
		}
		time.Sleep(overlap)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("prober: %v", err)
	}
	rounds := p.Rounds()
	if rounds < 3 {
		t.Errorf("prober asked %d times", rounds)
	}

	for _, vip := range vips {
		if got, want := macStrings(m.AnswerMACs(vip, t1.after, t2.before)), macStrings([]net.HardwareAddr{n1.MAC}); !slices.Equal(got, want) {
			t.Errorf("AnswerMACs(%s) while node1 held it = %v, want %v", vip, got, want)
		}
		if got, want := macStrings(m.AnswerMACs(vip, t2.after, t3.before)), macStrings([]net.HardwareAddr{n2.MAC}); !slices.Equal(got, want) {
			t.Errorf("AnswerMACs(%s) after the handover = %v, want %v", vip, got, want)
		}
		splits := m.SplitAnswers(vip, overlap)
		if len(splits) == 0 || splits[0].From.Before(t3.before) {
			t.Errorf("SplitAnswers(%s) = %v, want splits only once both held it (+%.3fs)\n%s", vip, splits, t3.before.Sub(m.Start()).Seconds(), m.Timeline(vip))
		}
		t.Logf("%s", m.Timeline(vip))
	}
	time.Sleep(3 * every)
	if p.Rounds() != rounds {
		t.Error("the prober went on after Stop")
	}
}
