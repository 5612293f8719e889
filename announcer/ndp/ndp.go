// Package ndp is the IPv6 twin of package arp: it answers neighbor
// solicitations for the IPv6 VIPs this node won, on one interface, with that
// interface's MAC, joins each VIP's solicited-node multicast group (without
// it the NIC drops the multicast solicitations before any socket sees them,
// and bridges with multicast snooping do not even forward them), and sends
// unsolicited neighbor advertisements on takeover.
//
// The kernel does not answer for VIPs bound to kube-ipvs0 on eth0: IPv6
// neighbor discovery only answers for addresses of the receiving interface.
//
// Solicitations are read off the link with a packet socket, not from the
// IPv6 stack: a client re-checks a cached entry (NUD) with a solicitation
// unicast to the VIP itself, and with kube-proxy in iptables or nftables
// mode the VIP is bound to no interface, so the kernel's IPv6 input drops it
// as addressed to another host before any ICMPv6 socket could see it.
// Advertisements still go out through an ICMPv6 socket, so the kernel picks
// the source address and resolves the client's MAC.
package ndp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	mdndp "github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/bpf"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/claimlog"
	"github.com/pvelb/pvelb/announcer/l2state"
)

// UnsolicitedSchedule is when takeover advertisements go out after a VIP is
// won: at once, then twice more in case one is lost.
var UnsolicitedSchedule = l2state.TakeoverSchedule

var (
	allNodes = netip.MustParseAddr("ff02::1")

	advertisements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_ndp_advertisements_total",
		Help: "Neighbor advertisements sent for won VIPs, by interface and kind (solicited answers a request, unsolicited is a takeover).",
	}, []string{"interface", "kind"})
	foreignClaims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_ndp_foreign_claims_total",
		Help: "Neighbor advertisements from another MAC for a VIP this node answers for (a successor's takeover, or another responder for the address), by interface.",
	}, []string{"interface"})
	sendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_ndp_send_errors_total",
		Help: "NDP packets that could not be sent or groups that could not be joined, by interface.",
	}, []string{"interface"})
	solicitations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_ndp_solicitations_total",
		Help: "Neighbor solicitations received for won VIPs, by interface and destination (multicast is a first resolution, unicast a client re-checking its cached entry).",
	}, []string{"interface", "destination"})
)

// MustRegister adds the package's metrics to reg (once per process).
func MustRegister(reg prometheus.Registerer) {
	reg.MustRegister(advertisements, sendErrors, solicitations, foreignClaims)
}

// Responder serves one interface.
type Responder struct {
	ifi *net.Interface
	// conn sends advertisements and holds the group memberships; it reads
	// nothing (its ICMPv6 filter blocks every type).
	conn *ipv6.PacketConn
	// link reads solicitations and advertisements off the interface.
	link *packet.Conn
	// cm pins the interface by index and leaves the source to the kernel.
	cm *ipv6.ControlMessage

	// won: the VIPs answered, their unsolicited bursts, and when another
	// MAC last advertised one (a successor's unsolicited advertisement).
	won *l2state.Set
	// groups: solicited-node group -> number of won VIPs in it. Only
	// touched from won's hooks, so guarded by won's lock.
	groups map[netip.Addr]int
	// claims records other MACs' claims on won VIPs (nil: not recorded).
	claims atomic.Pointer[claimlog.Log]
}

// New opens an ICMPv6 socket and a packet socket on the named interface. It
// must run in the network namespace of that interface.
func New(ifname string) (*Responder, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("ndp: interface %q: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("ndp: interface %q has no Ethernet address", ifname)
	}
	conn, err := listen(ifi)
	if err != nil {
		return nil, fmt.Errorf("ndp: %s: %w", ifname, err)
	}
	link, err := listenLink(ifi)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ndp: packet socket on %s: %w", ifname, err)
	}
	r := &Responder{
		ifi: ifi, conn: conn, link: link, groups: map[netip.Addr]int{},
		cm: &ipv6.ControlMessage{HopLimit: mdndp.HopLimit, IfIndex: ifi.Index},
	}
	r.won = l2state.New(UnsolicitedSchedule, l2state.Hooks{
		Keep:     servable,
		Announce: r.unsolicited,
		Won:      r.joined,
		Lost:     r.left,
		Closed:   func() { r.groups = map[netip.Addr]int{} },
	})
	return r, nil
}

// servable: an IPv6 address with a solicited-node group (every IPv6 one).
func servable(ip netip.Addr) bool {
	_, err := mdndp.SolicitedNodeMulticast(ip)
	return ip.Is6() && err == nil
}

// Interface is the served interface's name.
func (r *Responder) Interface() string { return r.ifi.Name }

// HardwareAddr is the MAC the responder answers with.
func (r *Responder) HardwareAddr() net.HardwareAddr { return r.ifi.HardwareAddr }

// SetIPs replaces the set of won IPv6 VIPs (IPv4 ones are ignored). New VIPs
// get their solicited-node group joined and a burst of unsolicited
// advertisements; dropped ones are no longer answered and their group is left
// when no other won VIP shares it.
func (r *Responder) SetIPs(ips []netip.Addr) { r.won.Replace(ips) }

// joined runs under won's lock when ip is won.
func (r *Responder) joined(ip netip.Addr) {
	g, _ := mdndp.SolicitedNodeMulticast(ip)
	if r.groups[g] == 0 {
		if err := r.conn.JoinGroup(r.ifi, &net.IPAddr{IP: g.AsSlice()}); err != nil {
			// Unicast solicitations and our advertisements still work;
			// multicast resolution may not (the NIC or a snooping bridge
			// drops it). Say so loudly.
			sendErrors.WithLabelValues(r.ifi.Name).Inc()
			klog.ErrorS(err, "Joining solicited-node group failed", "group", g, "ip", ip, "interface", r.ifi.Name)
		}
	}
	r.groups[g]++
	klog.V(2).InfoS("Answering NDP", "ip", ip, "interface", r.ifi.Name, "mac", r.ifi.HardwareAddr)
}

// left runs under won's lock when ip is lost.
func (r *Responder) left(ip netip.Addr) {
	g, _ := mdndp.SolicitedNodeMulticast(ip)
	if r.groups[g]--; r.groups[g] <= 0 {
		delete(r.groups, g)
		if err := r.conn.LeaveGroup(r.ifi, &net.IPAddr{IP: g.AsSlice()}); err != nil {
			klog.V(2).InfoS("Leaving solicited-node group failed", "group", g, "interface", r.ifi.Name, "err", err)
		}
	}
	klog.V(2).InfoS("Stopped answering NDP", "ip", ip, "interface", r.ifi.Name)
}

// YieldOnClaim makes the responder stop answering each VIP as soon as
// another MAC claims it (a graceful handover).
func (r *Responder) YieldOnClaim() { r.won.YieldOnClaim() }

// SetReassert lets the responder answer another MAC's advertisement for a
// VIP it serves with an unsolicited one while f allows (see
// l2state.NoteClaim).
func (r *Responder) SetReassert(f func() bool) { r.won.SetReassert(f) }

// SetClaimLog records other MACs' claims on the VIPs answered in l.
func (r *Responder) SetClaimLog(l *claimlog.Log) { r.claims.Store(l) }

// SetFence makes every advertisement depend on f, the membership's
// permission to answer.
func (r *Responder) SetFence(f func() bool) { r.won.SetFence(f) }

// Serving reports whether ip is currently answered.
func (r *Responder) Serving(ip netip.Addr) bool { return r.won.Serving(ip) }

func (r *Responder) advertise(ip, dst netip.Addr, solicited bool) error {
	na := &mdndp.NeighborAdvertisement{
		Solicited:     solicited,
		Override:      true, // the VIP moved: replace whatever the client cached
		TargetAddress: ip,
		Options: []mdndp.Option{&mdndp.LinkLayerAddress{
			Direction: mdndp.Target,
			Addr:      r.ifi.HardwareAddr,
		}},
	}
	kind := "unsolicited"
	if solicited {
		kind = "solicited"
	}
	b, err := mdndp.MarshalMessage(na)
	if err != nil {
		return err
	}
	// No zone on the destination: Go would resolve a zone name with the
	// process-wide interface table, which is wrong when the socket lives in
	// another network namespace than the thread (tests); the interface
	// index in the control message scopes link-local and multicast
	// destinations instead.
	if _, err := r.conn.WriteTo(b, r.cm, &net.IPAddr{IP: dst.WithZone("").AsSlice()}); err != nil {
		sendErrors.WithLabelValues(r.ifi.Name).Inc()
		return err
	}
	advertisements.WithLabelValues(r.ifi.Name, kind).Inc()
	return nil
}

// unsolicited sends one takeover advertisement for ip.
func (r *Responder) unsolicited(ip netip.Addr) {
	if err := r.advertise(ip, allNodes, false); err != nil {
		klog.V(2).InfoS("Unsolicited neighbor advertisement failed", "ip", ip, "interface", r.ifi.Name, "err", err)
	}
}

// Run answers solicitations until ctx ends or Close is called.
func (r *Responder) Run(ctx context.Context) error {
	buf := make([]byte, max(r.ifi.MTU, 1280))
	err := r.won.ReadLoop(ctx, r.link.SetReadDeadline, func() error { return r.readOne(buf) })
	if err != nil {
		return fmt.Errorf("ndp: reading on %s: %w", r.ifi.Name, err)
	}
	return nil
}

// readOne handles one received packet and returns only socket errors.
func (r *Responder) readOne(buf []byte) error {
	n, _, err := r.link.ReadFrom(buf)
	if err != nil {
		return err
	}
	p, err := parse(buf[:n])
	if err != nil {
		// Anyone on the segment can send these; they must not stop us.
		klog.V(5).InfoS("Ignored NDP packet", "interface", r.ifi.Name, "err", err)
		return nil
	}
	if na, ok := p.msg.(*mdndp.NeighborAdvertisement); ok {
		r.noteClaim(na)
		return nil
	}
	ns, ok := p.msg.(*mdndp.NeighborSolicitation)
	if !ok || !r.Serving(ns.TargetAddress) {
		return nil
	}
	dstKind := "unicast"
	if p.dst.IsMulticast() {
		dstKind = "multicast"
	}
	solicitations.WithLabelValues(r.ifi.Name, dstKind).Inc()
	// RFC 4861 7.2.4: answer a duplicate-address probe (source "::")
	// to all-nodes with Solicited clear; anything else to its sender.
	dst, solicited := p.src, true
	if p.src.IsUnspecified() {
		dst, solicited = allNodes, false
	}
	if err := r.advertise(ns.TargetAddress, dst, solicited); err != nil {
		klog.V(2).InfoS("Neighbor advertisement failed", "ip", ns.TargetAddress, "to", p.src, "err", err)
		return nil
	}
	klog.V(5).InfoS("Answered NDP", "ip", ns.TargetAddress, "to", p.src, "destination", dstKind, "interface", r.ifi.Name)
	return nil
}

func (r *Responder) noteClaim(na *mdndp.NeighborAdvertisement) {
	for _, o := range na.Options {
		if lla, ok := o.(*mdndp.LinkLayerAddress); ok && lla.Direction == mdndp.Target &&
			lla.Addr.String() != r.ifi.HardwareAddr.String() {
			if r.won.NoteClaim(na.TargetAddress) {
				foreignClaims.WithLabelValues(r.ifi.Name).Inc()
				r.claims.Load().Record(na.TargetAddress, lla.Addr, r.ifi.Name)
				klog.V(2).InfoS("Another MAC claims a VIP this node answers for", "ip", na.TargetAddress, "mac", lla.Addr, "interface", r.ifi.Name)
			}
		}
	}
}

// ClaimedSince reports whether another MAC advertised ip after t.
func (r *Responder) ClaimedSince(ip netip.Addr, t time.Time) bool {
	return r.won.ClaimedSince(ip, t)
}

// Close stops bursts and the read loop and closes the sockets (which also
// leaves every joined group).
func (r *Responder) Close() error {
	r.won.Close()
	return errors.Join(r.conn.Close(), r.link.Close())
}

// listen opens the raw ICMPv6 socket advertisements are sent from on ifi;
// the kernel fills in the ICMPv6 checksum and picks the source address. It
// receives nothing: its filter blocks every ICMPv6 type, so packets the link
// socket handles do not also pile up in its queue.
func listen(ifi *net.Interface) (*ipv6.PacketConn, error) {
	ic, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, err
	}
	pc := ic.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	for _, step := range []func() error{
		func() error { return pc.SetHopLimit(mdndp.HopLimit) }, // RFC 4861: 255 or the peer drops it
		func() error { return pc.SetMulticastHopLimit(mdndp.HopLimit) },
		func() error { return pc.SetMulticastInterface(ifi) },
		func() error { return pc.SetICMPFilter(&f) },
	} {
		if err := step(); err != nil {
			_ = ic.Close()
			return nil, err
		}
	}
	return pc, nil
}

// listenLink opens a packet socket on ifi for the IPv6 frames linkFilter
// passes. Its payload starts at the IPv6 header.
func listenLink(ifi *net.Interface) (*packet.Conn, error) {
	return packet.Listen(ifi, packet.Datagram, unix.ETH_P_IPV6, &packet.Config{Filter: linkFilter})
}

// linkFilter keeps the packet socket's rate to what the responder reads:
// frames this host receives (to its MAC, multicast or broadcast; not what
// it sends itself, loops back, or overhears in promiscuous mode), then
// ndpFilter.
var linkFilter = assemble(append([]bpf.Instruction{
	bpf.LoadExtension{Num: bpf.ExtType},
	bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: unix.PACKET_MULTICAST, SkipFalse: 1},
	bpf.RetConstant{Val: 0},
}, ndpFilter...))

// ndpFilter passes IPv6 packets whose ICMPv6 header follows the IPv6 header
// directly, with hop limit 255 (RFC 4861: anything less crossed a router)
// and of type neighbor solicitation or advertisement. Offsets are from the
// IPv6 header (a datagram packet socket strips the link header). Extension
// headers before ICMPv6 are not followed; neighbor discovery does not use
// them in practice.
var ndpFilter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_ICMPV6, SkipTrue: 5},
	bpf.LoadAbsolute{Off: 7, Size: 1}, // hop limit
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: mdndp.HopLimit, SkipTrue: 3},
	bpf.LoadAbsolute{Off: ipv6.HeaderLen, Size: 1}, // ICMPv6 type
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(ipv6.ICMPTypeNeighborSolicitation), SkipTrue: 2},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(ipv6.ICMPTypeNeighborAdvertisement), SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 1 << 16},
}

func assemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(fmt.Sprintf("ndp: BPF filter: %v", err))
	}
	return raw
}

// received is a validated neighbor discovery packet.
type received struct {
	src, dst netip.Addr
	msg      mdndp.Message // *NeighborSolicitation or *NeighborAdvertisement
}

// parse validates an IPv6 packet as RFC 4861 7.1.1 and 7.1.2 require of a
// neighbor solicitation or advertisement: what the kernel checks before an
// ICMPv6 socket sees a packet (the checksum) and what neighbor discovery
// checks on top, since this socket sits below both.
func parse(b []byte) (received, error) {
	if len(b) < ipv6.HeaderLen || b[0]>>4 != 6 {
		return received{}, errors.New("not an IPv6 packet")
	}
	if b[6] != unix.IPPROTO_ICMPV6 || b[7] != mdndp.HopLimit {
		return received{}, fmt.Errorf("next header %d, hop limit %d: not neighbor discovery", b[6], b[7])
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	if ipv6.HeaderLen+plen > len(b) {
		return received{}, fmt.Errorf("truncated: payload length %d, %d bytes", plen, len(b)-ipv6.HeaderLen)
	}
	body := b[ipv6.HeaderLen : ipv6.HeaderLen+plen] // any link padding left out
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	// Type, code, checksum and a 16-byte target at least.
	if len(body) < 24 {
		return received{}, fmt.Errorf("ICMPv6 message of %d bytes", len(body))
	}
	if body[1] != 0 {
		return received{}, fmt.Errorf("ICMPv6 code %d", body[1])
	}
	if !checksumOK(src, dst, body) {
		return received{}, errors.New("bad ICMPv6 checksum")
	}
	msg, err := mdndp.ParseMessage(body)
	if err != nil {
		return received{}, err
	}
	switch m := msg.(type) {
	case *mdndp.NeighborSolicitation:
		if m.TargetAddress.IsMulticast() {
			return received{}, errors.New("solicitation for a multicast target")
		}
		if src.IsUnspecified() {
			if g, _ := mdndp.SolicitedNodeMulticast(m.TargetAddress); dst != g {
				return received{}, errors.New("duplicate-address probe not sent to the solicited-node group")
			}
			for _, o := range m.Options {
				if lla, ok := o.(*mdndp.LinkLayerAddress); ok && lla.Direction == mdndp.Source {
					return received{}, errors.New("duplicate-address probe with a source link-layer address")
				}
			}
		}
	case *mdndp.NeighborAdvertisement:
		if m.TargetAddress.IsMulticast() {
			return received{}, errors.New("advertisement for a multicast target")
		}
		if m.Solicited && dst.IsMulticast() {
			return received{}, errors.New("solicited advertisement to a multicast group")
		}
	default:
		return received{}, fmt.Errorf("ICMPv6 type %d", body[0])
	}
	return received{src: src, dst: dst, msg: msg}, nil
}

// checksumOK verifies the ICMPv6 checksum of msg over the IPv6 pseudo-header
// (RFC 8200 8.1): the one's-complement sum, checksum field included, is all
// ones.
func checksumOK(src, dst netip.Addr, msg []byte) bool {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(msg)>>16) + uint32(len(msg)&0xffff) + unix.IPPROTO_ICMPV6
	add(msg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}
