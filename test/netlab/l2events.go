package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// Kind is the type of a recorded ARP or NDP packet.
type Kind uint8

// The packets a Monitor records.
const (
	ARPRequest Kind = iota + 1
	ARPReply
	NeighborSolicitation
	NeighborAdvertisement
)

func (k Kind) String() string {
	switch k {
	case ARPRequest:
		return "ARP request"
	case ARPReply:
		return "ARP reply"
	case NeighborSolicitation:
		return "NS"
	case NeighborAdvertisement:
		return "NA"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Event is one ARP or NDP packet seen on the wire.
type Event struct {
	// Time is when the kernel received the frame (see Monitor).
	Time time.Time
	Kind Kind
	// EthSrc and EthDst are the Ethernet header's addresses.
	EthSrc, EthDst net.HardwareAddr
	// MAC is the link-layer address the packet tells its receivers to use
	// for SenderIP (ARP) or TargetIP (NA): the ARP sender hardware address,
	// an NA's target link-layer option or an NS's source link-layer option.
	// Without the NDP option it is EthSrc, the only hint a receiver has.
	MAC net.HardwareAddr
	// SenderIP is the ARP sender protocol address, or the IPv6 source.
	SenderIP netip.Addr
	// TargetIP is the ARP target protocol address, or the NDP target.
	TargetIP netip.Addr
	// Solicited and Override are an NA's flags.
	Solicited, Override bool
}

// Answer reports the address the packet answers for: ARP replies answer for
// their sender IP, gratuitous ARP requests too (caches that hold the sender
// IP update to MAC), NAs for their target. Requests and solicitations that
// are not gratuitous answer for nothing.
func (e Event) Answer() (netip.Addr, bool) {
	switch e.Kind {
	case ARPReply:
		return e.SenderIP, true
	case ARPRequest:
		if e.Gratuitous() {
			return e.SenderIP, true
		}
	case NeighborAdvertisement:
		return e.TargetIP, true
	}
	return netip.Addr{}, false
}

// Gratuitous reports an unsolicited announcement: an ARP request or reply
// whose sender and target IP are the same, or an NA without the Solicited
// flag. (An ARP probe, sender 0.0.0.0, is not one.)
func (e Event) Gratuitous() bool {
	switch e.Kind {
	case ARPRequest, ARPReply:
		return e.SenderIP == e.TargetIP && e.SenderIP.IsValid() && !e.SenderIP.IsUnspecified()
	case NeighborAdvertisement:
		return !e.Solicited
	}
	return false
}

// Label names the event for a timeline: "ARP reply", "gratuitous ARP
// request", "NA solicited override", "NA unsolicited", ...
func (e Event) Label() string {
	switch e.Kind {
	case NeighborAdvertisement:
		s := "NA solicited"
		if !e.Solicited {
			s = "NA unsolicited"
		}
		if e.Override {
			s += " override"
		}
		return s
	case ARPRequest, ARPReply:
		if e.Gratuitous() {
			return "gratuitous " + e.Kind.String()
		}
	}
	return e.Kind.String()
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s %s is-at %s (eth %s > %s, sender %s)",
		e.Time.Format("15:04:05.000000"), e.Label(), e.TargetIP, e.MAC, e.EthSrc, e.EthDst, e.SenderIP)
}

// parseFrame turns an Ethernet frame into an Event; ok is false for frames
// that are neither ARP nor an IPv6 neighbor solicitation or advertisement.
func parseFrame(b []byte, t time.Time) (ev Event, ok bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		return Event{}, false
	}
	ev = Event{Time: t, EthSrc: f.Source, EthDst: f.Destination}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			return Event{}, false
		}
		switch p.Operation {
		case arp.OperationRequest:
			ev.Kind = ARPRequest
		case arp.OperationReply:
			ev.Kind = ARPReply
		default:
			return Event{}, false
		}
		ev.MAC, ev.SenderIP, ev.TargetIP = p.SenderHardwareAddr, p.SenderIP, p.TargetIP
		return ev, true
	case ethernet.EtherTypeIPv6:
		h, err := ipv6.ParseHeader(f.Payload)
		// Neighbor discovery never uses extension headers (RFC 4861 packets
		// are single, unfragmented ICMPv6 messages).
		if err != nil || h.NextHeader != 58 || len(f.Payload) < ipv6.HeaderLen+h.PayloadLen {
			return Event{}, false
		}
		msg, err := ndp.ParseMessage(f.Payload[ipv6.HeaderLen : ipv6.HeaderLen+h.PayloadLen])
		if err != nil {
			return Event{}, false
		}
		ev.SenderIP, _ = netip.AddrFromSlice(h.Src)
		ev.MAC = f.Source
		var opts []ndp.Option
		var dir ndp.Direction
		switch m := msg.(type) {
		case *ndp.NeighborSolicitation:
			ev.Kind, ev.TargetIP, opts, dir = NeighborSolicitation, m.TargetAddress, m.Options, ndp.Source
		case *ndp.NeighborAdvertisement:
			ev.Kind, ev.TargetIP, opts, dir = NeighborAdvertisement, m.TargetAddress, m.Options, ndp.Target
			ev.Solicited, ev.Override = m.Solicited, m.Override
		default:
			return Event{}, false
		}
		for _, o := range opts {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == dir {
				ev.MAC = lla.Addr
			}
		}
		return ev, true
	}
	return Event{}, false
}

// Events is a recorded timeline in capture order. Its queries are pure, so
// they can be checked without a lab and run on a Monitor's snapshot.
type Events []Event

// answers returns the events that answer for vip, ordered by time (capture
// order among equal times).
func (ev Events) answers(vip netip.Addr) Events {
	var out Events
	for _, e := range ev {
		if a, ok := e.Answer(); ok && a == vip {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return a.Time.Compare(b.Time) })
	return out
}

// AnswerMACs returns the distinct MACs that answered for vip with Time in
// [from, to), in the order of their first answer. A zero from or to leaves
// that end open.
func (ev Events) AnswerMACs(vip netip.Addr, from, to time.Time) []net.HardwareAddr {
	var macs []net.HardwareAddr
	for _, e := range ev.answers(vip) {
		if (!from.IsZero() && e.Time.Before(from)) || (!to.IsZero() && !e.Time.Before(to)) {
			continue
		}
		if !slices.ContainsFunc(macs, func(m net.HardwareAddr) bool { return m.String() == e.MAC.String() }) {
			macs = append(macs, e.MAC)
		}
	}
	return macs
}

// Gratuitous returns the times of the gratuitous packets (gratuitous ARP,
// unsolicited NA) for vip, per announcing MAC (keyed by MAC.String()).
func (ev Events) Gratuitous(vip netip.Addr) map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, e := range ev.answers(vip) {
		if e.Gratuitous() {
			out[e.MAC.String()] = append(out[e.MAC.String()], e.Time)
		}
	}
	return out
}

// Split is a period in which more than one MAC answered for a VIP.
type Split struct {
	From, To time.Time          // the first and last answer of the period
	MACs     []net.HardwareAddr // the MACs that interleaved, in order of first answer
	Answers  int                // answers for the VIP in [From, To]
}

// Duration is how long the MACs interleaved.
func (s Split) Duration() time.Duration { return s.To.Sub(s.From) }

func (s Split) String() string {
	macs := make([]string, len(s.MACs))
	for i, m := range s.MACs {
		macs[i] = m.String()
	}
	return fmt.Sprintf("%s for %v (%d answers from %s)", s.From.Format("15:04:05.000000"), s.Duration(), s.Answers, strings.Join(macs, ", "))
}

// SplitAnswers finds the periods in which two or more MACs answered for vip
// at once. Answers are compared in time order, and "at once" means
// interleaved within overlap:
//
//	MAC A answers at t1, another MAC answers after t1, and A answers again
//	at t2 with t2 - t1 < overlap.
//
// [t1, t2] is then a split, and splits that overlap or touch merge into one.
// A handover, where every answer of A precedes every answer of B, is never a
// split however close A's last and B's first answer are. A hand-back (A, then
// B, then A again) is one only when A's last answer before B and its first
// after are less than overlap apart, so overlap must be shorter than any
// tenure a test calls legitimate.
//
// With a Prober (Host.ProbeVIPs) asking every P, two MACs that both answer interleave within
// about P, so overlap of 2-3 P catches every dual answering that lasts over
// one probe. A brief dual answering a test allows (the old owner's last
// reply in flight while the new owner announces, bounded by a detection
// interval D) still shows up here: compare Split.Duration with D.
func (ev Events) SplitAnswers(vip netip.Addr, overlap time.Duration) []Split {
	ans := ev.answers(vip)
	last := map[string]int{} // MAC -> index of its latest answer so far
	var spans []Split
	for i, e := range ans {
		mac := e.MAC.String()
		j, seen := last[mac]
		last[mac] = i
		// If A, other, A within overlap ends at i, so does the pattern that
		// starts at A's previous answer j (the shortest one); j < i-1 means
		// other MACs answered in between.
		if seen && j < i-1 && e.Time.Sub(ans[j].Time) < overlap {
			spans = append(spans, Split{From: ans[j].Time, To: e.Time})
		}
	}
	slices.SortFunc(spans, func(a, b Split) int { return a.From.Compare(b.From) })
	var out []Split
	for _, s := range spans {
		if n := len(out); n > 0 && !s.From.After(out[n-1].To) {
			if s.To.After(out[n-1].To) {
				out[n-1].To = s.To
			}
			continue
		}
		out = append(out, s)
	}
	for k := range out {
		s := &out[k]
		for _, e := range ans {
			if e.Time.Before(s.From) || e.Time.After(s.To) {
				continue
			}
			s.Answers++
			if !slices.ContainsFunc(s.MACs, func(m net.HardwareAddr) bool { return m.String() == e.MAC.String() }) {
				s.MACs = append(s.MACs, e.MAC)
			}
		}
	}
	return out
}

// maxTimelineLines bounds a Timeline dump, keeping its head and tail, so a
// long run cannot flood a failure message.
const maxTimelineLines = 300

// Timeline dumps the answers for vip, one line per run of consecutive
// answers of the same MAC and label: the offset from origin (and of the
// run's last answer), the host (from names, keyed by MAC.String()) and MAC,
// and what was sent, e.g.
//
//	+1.203s..+2.180s  node1 02:00:5e:00:00:0b  ARP reply x50
//	+2.497s           node2 02:00:5e:00:00:0c  gratuitous ARP request
func (ev Events) Timeline(vip netip.Addr, origin time.Time, names map[string]string) string {
	type run struct {
		first, last time.Time
		mac, label  string
		n           int
	}
	var runs []run
	for _, e := range ev.answers(vip) {
		mac, label := e.MAC.String(), e.Label()
		if n := len(runs); n > 0 && runs[n-1].mac == mac && runs[n-1].label == label {
			runs[n-1].last = e.Time
			runs[n-1].n++
			continue
		}
		runs = append(runs, run{first: e.Time, last: e.Time, mac: mac, label: label, n: 1})
	}
	if len(runs) == 0 {
		return fmt.Sprintf("no answers for %s\n", vip)
	}
	off := func(t time.Time) string { return fmt.Sprintf("%+.3fs", t.Sub(origin).Seconds()) }
	var b strings.Builder
	fmt.Fprintf(&b, "answers for %s (offsets from %s):\n", vip, origin.Format("15:04:05.000"))
	for i, r := range runs {
		if len(runs) > maxTimelineLines && i == maxTimelineLines/2 {
			fmt.Fprintf(&b, "  ... %d lines left out ...\n", len(runs)-maxTimelineLines)
		}
		if len(runs) > maxTimelineLines && i >= maxTimelineLines/2 && i < len(runs)-maxTimelineLines/2 {
			continue
		}
		when := off(r.first)
		if r.n > 1 {
			when += ".." + off(r.last)
		}
		who := r.mac
		if name := names[r.mac]; name != "" {
			who = name + " " + r.mac
		}
		count := ""
		if r.n > 1 {
			count = fmt.Sprintf(" x%d", r.n)
		}
		fmt.Fprintf(&b, "  %-18s  %s  %s%s\n", when, who, r.label, count)
	}
	return b.String()
}
