// Package ndp is the IPv6 twin of package arp: it answers neighbor
// solicitations for the IPv6 VIPs this node won, on one interface, with that
// interface's MAC, joins each VIP's solicited-node multicast group (without
// it the kernel drops the multicast solicitations before any socket sees
// them, and bridges with multicast snooping do not even forward them), and
// sends unsolicited neighbor advertisements on takeover.
//
// The kernel does not answer for VIPs bound to kube-ipvs0 on eth0: IPv6
// neighbor discovery only answers for addresses of the receiving interface.
package ndp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	mdndp "github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"k8s.io/klog/v2"

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
	sendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_ndp_send_errors_total",
		Help: "NDP packets that could not be sent or groups that could not be joined, by interface.",
	}, []string{"interface"})
)

// MustRegister adds the package's metrics to reg (once per process).
func MustRegister(reg prometheus.Registerer) {
	reg.MustRegister(advertisements, sendErrors)
}

// Responder serves one interface.
type Responder struct {
	ifi  *net.Interface
	conn *ipv6.PacketConn
	// cm pins the interface by index and leaves the source to the kernel.
	cm *ipv6.ControlMessage

	// won: the VIPs answered, their unsolicited bursts, and when another
	// MAC last advertised one (a successor's unsolicited advertisement).
	won *l2state.Set
	// groups: solicited-node group -> number of won VIPs in it. Only
	// touched from won's hooks, so guarded by won's lock.
	groups map[netip.Addr]int
}

// New opens an ICMPv6 socket on the named interface. It must run in the
// network namespace of that interface.
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
	r := &Responder{
		ifi: ifi, conn: conn, groups: map[netip.Addr]int{},
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
			// multicast resolution will not. Say so loudly.
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
	err := r.won.ReadLoop(ctx, r.conn.SetReadDeadline, func() error { return r.readOne(buf) })
	if err != nil {
		return fmt.Errorf("ndp: reading on %s: %w", r.ifi.Name, err)
	}
	return nil
}

// readOne handles one received message and returns only socket errors.
func (r *Responder) readOne(buf []byte) error {
	n, cm, from, err := r.conn.ReadFrom(buf)
	if err != nil {
		return err
	}
	if cm != nil && cm.IfIndex != 0 && cm.IfIndex != r.ifi.Index {
		return nil
	}
	msg, err := mdndp.ParseMessage(buf[:n])
	if err != nil {
		return nil
	}
	ipa, _ := from.(*net.IPAddr)
	if ipa == nil {
		return nil
	}
	src, _ := netip.AddrFromSlice(ipa.IP)
	if na, ok := msg.(*mdndp.NeighborAdvertisement); ok {
		r.noteClaim(na)
		return nil
	}
	ns, ok := msg.(*mdndp.NeighborSolicitation)
	if !ok || !r.Serving(ns.TargetAddress) {
		return nil
	}
	// RFC 4861 7.2.4: answer a duplicate-address probe (source "::")
	// to all-nodes with Solicited clear; anything else to its sender.
	dst, solicited := src, true
	if src.IsUnspecified() {
		dst, solicited = allNodes, false
	}
	if err := r.advertise(ns.TargetAddress, dst, solicited); err != nil {
		klog.V(2).InfoS("Neighbor advertisement failed", "ip", ns.TargetAddress, "to", src, "err", err)
		return nil
	}
	klog.V(5).InfoS("Answered NDP", "ip", ns.TargetAddress, "to", src, "interface", r.ifi.Name)
	return nil
}

func (r *Responder) noteClaim(na *mdndp.NeighborAdvertisement) {
	for _, o := range na.Options {
		if lla, ok := o.(*mdndp.LinkLayerAddress); ok && lla.Direction == mdndp.Target &&
			lla.Addr.String() != r.ifi.HardwareAddr.String() {
			r.won.NoteClaim(na.TargetAddress)
		}
	}
}

// ClaimedSince reports whether another MAC advertised ip after t.
func (r *Responder) ClaimedSince(ip netip.Addr, t time.Time) bool {
	return r.won.ClaimedSince(ip, t)
}

// Close stops bursts and the read loop and closes the socket (which also
// leaves every joined group).
func (r *Responder) Close() error {
	r.won.Close()
	return r.conn.Close()
}

// listen opens a raw ICMPv6 socket for neighbor solicitations on ifi. It is
// bound to "::" rather than an address: a socket bound to one address only
// receives packets sent to it, and the unicast solicitations a client sends
// to re-check a cached VIP (NUD) are addressed to the VIP itself. The
// kernel fills in the ICMPv6 checksum and picks the source address.
func listen(ifi *net.Interface) (*ipv6.PacketConn, error) {
	ic, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, err
	}
	pc := ic.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	for _, step := range []func() error{
		func() error { return pc.SetHopLimit(mdndp.HopLimit) }, // RFC 4861: 255 or the peer drops it
		func() error { return pc.SetMulticastHopLimit(mdndp.HopLimit) },
		func() error { return pc.SetMulticastInterface(ifi) },
		func() error { return pc.SetICMPFilter(&f) },
		func() error { return pc.SetControlMessage(ipv6.FlagInterface, true) },
	} {
		if err := step(); err != nil {
			_ = ic.Close()
			return nil, err
		}
	}
	return pc, nil
}
