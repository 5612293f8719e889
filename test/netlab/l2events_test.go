package netlab

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

var (
	macA   = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 11}
	macB   = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 12}
	macC   = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 13}
	macCli = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 100}
	bcast  = ethernet.Broadcast
	vip4   = VIP4(0)
	vip6   = VIP6(0)
	cli4   = hostAddr4(ClientOctet)
)

func ethFrame(t *testing.T, src, dst net.HardwareAddr, et ethernet.EtherType, payload []byte) []byte {
	t.Helper()
	b, err := (&ethernet.Frame{Source: src, Destination: dst, EtherType: et, Payload: payload}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func arpFrame(t *testing.T, op arp.Operation, ethDst, senderMAC net.HardwareAddr, sender, target netip.Addr) []byte {
	t.Helper()
	p, err := arp.NewPacket(op, senderMAC, sender, ethernet.Broadcast, target)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return ethFrame(t, senderMAC, ethDst, ethernet.EtherTypeARP, b)
}

// ip6Frame wraps an ICMPv6 body (type first) in IPv6 and Ethernet headers.
func ip6Frame(t *testing.T, ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, next byte, body []byte) []byte {
	t.Helper()
	h := make([]byte, ipv6.HeaderLen)
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:6], uint16(len(body)))
	h[6], h[7] = next, 255
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return ethFrame(t, ethSrc, ethDst, ethernet.EtherTypeIPv6, append(h, body...))
}

func ndpFrame(t *testing.T, ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, m ndp.Message) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return ip6Frame(t, ethSrc, ethDst, src, dst, 58, b)
}

func TestParseFrameAndFilter(t *testing.T) {
	at := time.Unix(1000, 0)
	allNodes := netip.MustParseAddr("ff02::1")
	node6 := hostAddr6(11)
	cli6 := hostAddr6(ClientOctet)
	tests := []struct {
		name  string
		frame []byte
		want  Event // zero Kind: not recorded
	}{{
		name:  "ARP request from the client",
		frame: arpFrame(t, arp.OperationRequest, bcast, macCli, cli4, vip4),
		want:  Event{Kind: ARPRequest, EthSrc: macCli, EthDst: bcast, MAC: macCli, SenderIP: cli4, TargetIP: vip4},
	}, {
		name:  "unicast ARP reply",
		frame: arpFrame(t, arp.OperationReply, macCli, macA, vip4, cli4),
		want:  Event{Kind: ARPReply, EthSrc: macA, EthDst: macCli, MAC: macA, SenderIP: vip4, TargetIP: cli4},
	}, {
		name:  "gratuitous ARP request",
		frame: arpFrame(t, arp.OperationRequest, bcast, macB, vip4, vip4),
		want:  Event{Kind: ARPRequest, EthSrc: macB, EthDst: bcast, MAC: macB, SenderIP: vip4, TargetIP: vip4},
	}, {
		name: "unsolicited NA with target link-layer address",
		frame: ndpFrame(t, macA, bcast, node6, allNodes, &ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: macB}}}),
		want: Event{Kind: NeighborAdvertisement, EthSrc: macA, EthDst: bcast, MAC: macB, SenderIP: node6, TargetIP: vip6, Override: true},
	}, {
		name:  "solicited NA without the option: the frame's source answers",
		frame: ndpFrame(t, macA, macCli, vip6, cli6, &ndp.NeighborAdvertisement{Solicited: true, TargetAddress: vip6}),
		want:  Event{Kind: NeighborAdvertisement, EthSrc: macA, EthDst: macCli, MAC: macA, SenderIP: vip6, TargetIP: vip6, Solicited: true},
	}, {
		name: "NS with source link-layer address",
		frame: ndpFrame(t, macCli, bcast, cli6, allNodes, &ndp.NeighborSolicitation{TargetAddress: vip6,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: macCli}}}),
		want: Event{Kind: NeighborSolicitation, EthSrc: macCli, EthDst: bcast, MAC: macCli, SenderIP: cli6, TargetIP: vip6},
	}, {
		name:  "router solicitation",
		frame: ndpFrame(t, macCli, bcast, cli6, allNodes, &ndp.RouterSolicitation{}),
	}, {
		name:  "ICMPv6 echo request",
		frame: ip6Frame(t, macCli, macA, cli6, vip6, 58, []byte{128, 0, 0, 0, 0, 1, 0, 1}),
	}, {
		name:  "UDP over IPv6",
		frame: ip6Frame(t, macCli, macA, cli6, vip6, 17, make([]byte, 8)),
	}, {
		name:  "IPv4",
		frame: ethFrame(t, macCli, macA, ethernet.EtherTypeIPv4, make([]byte, 28)),
	}, {
		name:  "truncated",
		frame: arpFrame(t, arp.OperationReply, macCli, macA, vip4, cli4)[:20],
	}}
	vm, err := bpf.NewVM(mustDisassemble(t, ndpFilter))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseFrame(tt.frame, at)
			if ok != (tt.want.Kind != 0) {
				t.Fatalf("parseFrame recorded = %v, want %v (%+v)", ok, !ok, got)
			}
			if ok {
				tt.want.Time = at
				if got.String() != tt.want.String() || got.Solicited != tt.want.Solicited || got.Override != tt.want.Override {
					t.Errorf("parseFrame = %+v\nwant %+v", got, tt.want)
				}
			}
			// The socket filter lets through exactly what is recorded (a
			// truncated ARP frame passes it; the parser drops it).
			n, err := vm.Run(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if pass, want := n > 0, ok || tt.name == "truncated"; pass != want {
				t.Errorf("filter passes = %v, want %v", pass, want)
			}
		})
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("cannot disassemble the filter")
	}
	return prog
}

func TestReceiveTime(t *testing.T) {
	now := time.Now()
	stamp := func(ts time.Time) []byte {
		b := make([]byte, unix.CmsgSpace(16))
		binary.NativeEndian.PutUint64(b[0:8], uint64(unix.CmsgLen(16)))
		binary.NativeEndian.PutUint32(b[8:12], unix.SOL_SOCKET)
		binary.NativeEndian.PutUint32(b[12:16], unix.SCM_TIMESTAMPNS)
		d := b[unix.CmsgLen(0):]
		binary.NativeEndian.PutUint64(d[0:8], uint64(ts.Unix()))
		binary.NativeEndian.PutUint64(d[8:16], uint64(ts.Nanosecond()))
		return b
	}
	for _, tt := range []struct {
		name string
		oob  []byte
		want time.Duration // before now
	}{
		{"kernel stamp 5ms ago", stamp(now.Add(-5 * time.Millisecond)), 5 * time.Millisecond},
		{"no control message", nil, 0},
		{"stamp in the future (clock stepped back)", stamp(now.Add(time.Hour)), 0},
		{"stamp long ago (clock stepped forward)", stamp(now.Add(-time.Hour)), 0},
	} {
		got := receiveTime(tt.oob, now)
		if d := now.Sub(got); d != tt.want {
			t.Errorf("%s: receiveTime = now - %v, want now - %v", tt.name, d, tt.want)
		}
		// The monotonic reading survives, so timelines compare by it.
		if strings.Contains(got.String(), "m=") != strings.Contains(now.String(), "m=") {
			t.Errorf("%s: receiveTime lost the monotonic clock reading: %v", tt.name, got)
		}
	}
}

func TestEventClassification(t *testing.T) {
	zero := netip.IPv4Unspecified()
	for _, tt := range []struct {
		name       string
		e          Event
		answer     netip.Addr // invalid: answers for nothing
		gratuitous bool
		label      string
	}{
		{"ARP request", Event{Kind: ARPRequest, SenderIP: cli4, TargetIP: vip4}, netip.Addr{}, false, "ARP request"},
		{"ARP reply", Event{Kind: ARPReply, SenderIP: vip4, TargetIP: cli4}, vip4, false, "ARP reply"},
		{"gratuitous ARP request", Event{Kind: ARPRequest, SenderIP: vip4, TargetIP: vip4}, vip4, true, "gratuitous ARP request"},
		{"gratuitous ARP reply", Event{Kind: ARPReply, SenderIP: vip4, TargetIP: vip4}, vip4, true, "gratuitous ARP reply"},
		{"ARP probe", Event{Kind: ARPRequest, SenderIP: zero, TargetIP: vip4}, netip.Addr{}, false, "ARP request"},
		{"solicited NA", Event{Kind: NeighborAdvertisement, TargetIP: vip6, Solicited: true}, vip6, false, "NA solicited"},
		{"unsolicited NA", Event{Kind: NeighborAdvertisement, TargetIP: vip6, Override: true}, vip6, true, "NA unsolicited override"},
		{"NS", Event{Kind: NeighborSolicitation, TargetIP: vip6}, netip.Addr{}, false, "NS"},
	} {
		a, ok := tt.e.Answer()
		if ok != tt.answer.IsValid() || a != tt.answer {
			t.Errorf("%s: Answer() = %v, %v; want %v", tt.name, a, ok, tt.answer)
		}
		if g := tt.e.Gratuitous(); g != tt.gratuitous {
			t.Errorf("%s: Gratuitous() = %v, want %v", tt.name, g, tt.gratuitous)
		}
		if l := tt.e.Label(); l != tt.label {
			t.Errorf("%s: Label() = %q, want %q", tt.name, l, tt.label)
		}
	}
}

// tl builds a timeline from compact steps: "A" is an ARP reply for vip4
// from macA, "gA" a gratuitous ARP from it, "nB" an unsolicited NA for vip6
// from macB, "r" the client's ARP request, "o" another VIP's reply; each
// step at the given millisecond.
func tl(steps ...any) Events {
	t0 := time.Unix(1000, 0)
	macs := map[byte]net.HardwareAddr{'A': macA, 'B': macB, 'C': macC}
	var ev Events
	for i := 0; i < len(steps); i += 2 {
		s, ms := steps[i].(string), steps[i+1].(int)
		at := t0.Add(time.Duration(ms) * time.Millisecond)
		mac := macs[s[len(s)-1]]
		switch s[0] {
		case 'g':
			ev = append(ev, Event{Time: at, Kind: ARPRequest, MAC: mac, SenderIP: vip4, TargetIP: vip4})
		case 'n':
			ev = append(ev, Event{Time: at, Kind: NeighborAdvertisement, MAC: mac, TargetIP: vip6, Override: true})
		case 'r':
			ev = append(ev, Event{Time: at, Kind: ARPRequest, MAC: macCli, SenderIP: cli4, TargetIP: vip4})
		case 'o':
			ev = append(ev, Event{Time: at, Kind: ARPReply, MAC: mac, SenderIP: VIP4(1), TargetIP: cli4})
		default:
			ev = append(ev, Event{Time: at, Kind: ARPReply, MAC: mac, SenderIP: vip4, TargetIP: cli4})
		}
	}
	return ev
}

func ms(n int) time.Time { return time.Unix(1000, 0).Add(time.Duration(n) * time.Millisecond) }

func macStrings(macs []net.HardwareAddr) []string {
	out := make([]string, len(macs))
	for i, m := range macs {
		out[i] = m.String()
	}
	return out
}

func TestAnswerMACs(t *testing.T) {
	ev := tl("r", 0, "A", 1, "oC", 5, "A", 10, "gB", 20, "B", 30, "nC", 40)
	for _, tt := range []struct {
		name     string
		vip      netip.Addr
		from, to time.Time
		want     []net.HardwareAddr
	}{
		{"everything", vip4, time.Time{}, time.Time{}, []net.HardwareAddr{macA, macB}},
		{"from is inclusive", vip4, ms(20), time.Time{}, []net.HardwareAddr{macB}},
		{"to is exclusive", vip4, time.Time{}, ms(20), []net.HardwareAddr{macA}},
		{"empty window", vip4, ms(11), ms(20), nil},
		{"IPv6", vip6, time.Time{}, time.Time{}, []net.HardwareAddr{macC}},
		{"another VIP", VIP4(1), time.Time{}, time.Time{}, []net.HardwareAddr{macC}},
	} {
		if got := ev.AnswerMACs(tt.vip, tt.from, tt.to); !slices.Equal(macStrings(got), macStrings(tt.want)) {
			t.Errorf("%s: AnswerMACs = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestGratuitous(t *testing.T) {
	ev := tl("A", 0, "gA", 5, "gB", 10, "gB", 20, "B", 25, "nB", 30, "gA", 40)
	got := ev.Gratuitous(vip4)
	want := map[string][]time.Time{macA.String(): {ms(5), ms(40)}, macB.String(): {ms(10), ms(20)}}
	if len(got) != len(want) {
		t.Fatalf("Gratuitous = %v, want %v", got, want)
	}
	for mac, times := range want {
		if !slices.Equal(got[mac], times) {
			t.Errorf("Gratuitous[%s] = %v, want %v", mac, got[mac], times)
		}
	}
	if g6 := ev.Gratuitous(vip6); len(g6) != 1 || len(g6[macB.String()]) != 1 {
		t.Errorf("Gratuitous(vip6) = %v, want one NA from %s", g6, macB)
	}
}

func TestSplitAnswers(t *testing.T) {
	const overlap = 50 * time.Millisecond
	type split struct {
		from, to int
		macs     []net.HardwareAddr
		answers  int
	}
	for _, tt := range []struct {
		name string
		ev   Events
		want []split
	}{
		{"one owner", tl("A", 0, "A", 20, "A", 40), nil},
		{"handover, however close", tl("A", 0, "A", 20, "gB", 21, "B", 22, "B", 40), nil},
		{"handover with requests and other VIPs in between",
			tl("A", 0, "r", 10, "oB", 11, "oA", 12, "A", 20, "B", 30), nil},
		{"old owner's reply after the new owner's announcement",
			tl("A", 0, "A", 20, "gB", 25, "A", 26, "B", 40),
			// A's late reply is between B's answers too: B, A, B.
			[]split{{20, 40, []net.HardwareAddr{macA, macB}, 4}}},
		{"both answer every probe",
			tl("A", 0, "A", 20, "B", 21, "B", 40, "A", 41, "A", 60, "B", 61, "B", 80, "B", 100),
			[]split{{20, 61, []net.HardwareAddr{macA, macB}, 6}}},
		{"hand-back after a tenure longer than overlap",
			tl("A", 0, "B", 10, "B", 30, "B", 50, "A", 70), nil},
		{"hand-back within overlap",
			tl("A", 0, "B", 10, "A", 40),
			[]split{{0, 40, []net.HardwareAddr{macA, macB}, 3}}},
		{"two separate splits",
			tl("A", 0, "B", 1, "A", 2, "A", 100, "A", 200, "B", 201, "A", 202, "A", 300),
			[]split{{0, 2, []net.HardwareAddr{macA, macB}, 3}, {200, 202, []net.HardwareAddr{macA, macB}, 3}}},
		{"three MACs, spans nested and merged",
			tl("A", 0, "B", 10, "C", 11, "B", 12, "A", 30, "C", 100),
			[]split{{0, 30, []net.HardwareAddr{macA, macB, macC}, 5}}},
		{"gratuitous and replies count alike",
			tl("gA", 0, "B", 10, "gA", 20),
			[]split{{0, 20, []net.HardwareAddr{macA, macB}, 3}}},
		{"recorded out of time order",
			tl("A", 26, "A", 0, "gB", 25, "A", 20),
			[]split{{20, 26, []net.HardwareAddr{macA, macB}, 3}}},
		{"interleaving exactly overlap apart is not simultaneous",
			tl("A", 0, "B", 10, "A", 50), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.ev.SplitAnswers(vip4, overlap)
			if len(got) != len(tt.want) {
				t.Fatalf("SplitAnswers = %v, want %d splits\n%s", got, len(tt.want), tt.ev.Timeline(vip4, ms(0), nil))
			}
			for i, w := range tt.want {
				g := got[i]
				if !g.From.Equal(ms(w.from)) || !g.To.Equal(ms(w.to)) || g.Answers != w.answers ||
					!slices.Equal(macStrings(g.MACs), macStrings(w.macs)) {
					t.Errorf("split %d = %v [%v, %v], want %+v", i, g, g.From.Sub(ms(0)), g.To.Sub(ms(0)), w)
				}
				if g.Duration() != time.Duration(w.to-w.from)*time.Millisecond {
					t.Errorf("split %d: Duration = %v", i, g.Duration())
				}
			}
		})
	}
	// The other family's answers are another VIP.
	if got := tl("nA", 0, "nB", 1, "nA", 2).SplitAnswers(vip4, overlap); got != nil {
		t.Errorf("SplitAnswers(vip4) over NAs for vip6 = %v", got)
	}
	if got := tl("nA", 0, "nB", 1, "nA", 2).SplitAnswers(vip6, overlap); len(got) != 1 {
		t.Errorf("SplitAnswers(vip6) = %v, want one split", got)
	}
}

func TestTimeline(t *testing.T) {
	names := map[string]string{macA.String(): "node1", macB.String(): "node2"}
	got := tl("r", 0, "A", 1000, "A", 1020, "A", 1040, "gB", 1300, "B", 1320, "C", 1330).Timeline(vip4, ms(0), names)
	want := "answers for 192.0.2.200 (offsets from " + ms(0).Format("15:04:05.000") + "):\n" +
		"  +1.000s..+1.040s    node1 02:00:5e:00:00:0b  ARP reply x3\n" +
		"  +1.300s             node2 02:00:5e:00:00:0c  gratuitous ARP request\n" +
		"  +1.320s             node2 02:00:5e:00:00:0c  ARP reply\n" +
		"  +1.330s             02:00:5e:00:00:0d  ARP reply\n"
	if got != want {
		t.Errorf("Timeline =\n%s\nwant\n%s", got, want)
	}
	if got := tl("r", 0).Timeline(vip4, ms(0), nil); got != "no answers for 192.0.2.200\n" {
		t.Errorf("Timeline without answers = %q", got)
	}
	// A long flap keeps its head and tail and says what it left out.
	var steps []any
	for i := range 1000 {
		steps = append(steps, string("AB"[i%2]), i)
	}
	long := tl(steps...).Timeline(vip4, ms(0), nil)
	if n := strings.Count(long, "\n"); n != maxTimelineLines+2 {
		t.Errorf("long Timeline has %d lines, want %d", n, maxTimelineLines+2)
	}
	if !strings.Contains(long, "700 lines left out") || !strings.Contains(long, "+0.999s") {
		t.Errorf("long Timeline does not keep the tail or say what it left out:\n%s", long)
	}
}
