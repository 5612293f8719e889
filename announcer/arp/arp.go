// Package arp answers ARP requests for the IPv4 VIPs this node won, on one
// interface, with that interface's MAC, and sends a burst of gratuitous ARP
// when it takes a VIP over so that clients and switches move to it at once.
//
// The kernel itself never answers for the VIPs: kube-proxy in IPVS mode with
// strictARP binds them to kube-ipvs0 with arp_ignore=1/arp_announce=2.
package arp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	mdarp "github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/claimlog"
	"github.com/pvelb/pvelb/announcer/l2state"
)

// GratuitousSchedule is when the takeover packets go out, after the VIP is
// won (see l2state.TakeoverSchedule for why three).
var GratuitousSchedule = l2state.TakeoverSchedule

var (
	repliesSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_arp_replies_total",
		Help: "ARP requests for a won VIP answered, by interface.",
	}, []string{"interface"})
	gratuitousSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_arp_gratuitous_total",
		Help: "Gratuitous ARP packets sent on takeover, by interface.",
	}, []string{"interface"})
	sendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_arp_send_errors_total",
		Help: "ARP packets that could not be sent, by interface.",
	}, []string{"interface"})
	foreignClaims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pvelb_announcer_arp_foreign_claims_total",
		Help: "ARP packets from another MAC claiming a VIP this node answers for (a successor's takeover, or another responder for the address), by interface.",
	}, []string{"interface"})
)

// MustRegister adds the package's metrics to reg (once per process).
func MustRegister(reg prometheus.Registerer) {
	reg.MustRegister(repliesSent, gratuitousSent, sendErrors, foreignClaims)
}

// Responder serves one interface.
type Responder struct {
	ifi *net.Interface
	// conn is a packet socket for ARP frames. Not mdarp.Client: it refuses
	// interfaces without an IPv4 address, and a pool may name an interface
	// that carries only VIPs (a VLAN for services), which needs none to
	// answer.
	conn *packet.Conn
	buf  []byte
	// won: the VIPs answered, their gratuitous bursts, and when another MAC
	// last claimed one (its gratuitous ARP on takeover).
	won *l2state.Set
	// claims records other MACs' claims on won VIPs (nil: not recorded).
	claims atomic.Pointer[claimlog.Log]
}

// New opens an ARP socket on the named interface. It must run in the network
// namespace of that interface (the socket stays there).
func New(ifname string) (*Responder, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("arp: interface %q: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("arp: interface %q has no Ethernet address", ifname)
	}
	c, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("arp: opening socket on %q: %w", ifname, err)
	}
	r := &Responder{ifi: ifi, conn: c, buf: make([]byte, max(ifi.MTU, 128)+14)}
	r.won = l2state.New(GratuitousSchedule, l2state.Hooks{
		Keep:     netip.Addr.Is4,
		Announce: r.gratuitous,
		Won: func(ip netip.Addr) {
			klog.V(2).InfoS("Answering ARP", "ip", ip, "interface", ifi.Name, "mac", ifi.HardwareAddr)
		},
		Lost: func(ip netip.Addr) {
			klog.V(2).InfoS("Stopped answering ARP", "ip", ip, "interface", ifi.Name)
		},
	})
	return r, nil
}

// Interface is the served interface's name.
func (r *Responder) Interface() string { return r.ifi.Name }

// HardwareAddr is the MAC the responder answers with.
func (r *Responder) HardwareAddr() net.HardwareAddr { return r.ifi.HardwareAddr }

// SetIPs replaces the set of won IPv4 VIPs (other families are ignored).
// VIPs new to the set get a gratuitous burst; dropped ones stop being
// answered at once.
func (r *Responder) SetIPs(ips []netip.Addr) { r.won.Replace(ips) }

// SetFence makes every reply and gratuitous packet depend on f, the
// membership's permission to answer.
func (r *Responder) SetFence(f func() bool) { r.won.SetFence(f) }

// YieldOnClaim makes the responder stop answering each VIP as soon as
// another MAC claims it (a graceful handover).
func (r *Responder) YieldOnClaim() { r.won.YieldOnClaim() }

// SetReassert lets the responder answer another MAC's claim on a VIP it
// serves with a gratuitous ARP while f allows (see l2state.NoteClaim).
func (r *Responder) SetReassert(f func() bool) { r.won.SetReassert(f) }

// SetClaimLog records other MACs' claims on the VIPs answered in l.
func (r *Responder) SetClaimLog(l *claimlog.Log) { r.claims.Store(l) }

// Serving reports whether ip is currently answered.
func (r *Responder) Serving(ip netip.Addr) bool { return r.won.Serving(ip) }

// gratuitous sends one takeover packet for ip.
func (r *Responder) gratuitous(ip netip.Addr) {
	// Request form (sender IP = target IP, broadcast): every Linux
	// version treats it as gratuitous and overrides an existing
	// neighbour entry even within its locktime.
	p, err := mdarp.NewPacket(mdarp.OperationRequest, r.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
	if err == nil {
		err = r.send(p, ethernet.Broadcast)
	}
	if err != nil {
		sendErrors.WithLabelValues(r.ifi.Name).Inc()
		klog.V(2).InfoS("Gratuitous ARP failed", "ip", ip, "interface", r.ifi.Name, "err", err)
		return
	}
	gratuitousSent.WithLabelValues(r.ifi.Name).Inc()
}

// Run answers requests until ctx ends or Close is called.
func (r *Responder) Run(ctx context.Context) error {
	err := r.won.ReadLoop(ctx, r.conn.SetReadDeadline, r.readOne)
	if err != nil {
		return fmt.Errorf("arp: reading on %s: %w", r.ifi.Name, err)
	}
	return nil
}

// send writes one ARP packet in an Ethernet frame from this interface to dst.
func (r *Responder) send(p *mdarp.Packet, dst net.HardwareAddr) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := ethernet.Frame{Destination: dst, Source: r.ifi.HardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = r.conn.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

// readOne handles one received frame and returns only socket errors.
func (r *Responder) readOne() error {
	n, _, err := r.conn.ReadFrom(r.buf)
	if err != nil {
		return err
	}
	// Anything that does not parse is a frame any host on the segment can
	// send: it must not stop the responder.
	var f ethernet.Frame
	var p mdarp.Packet
	if f.UnmarshalBinary(r.buf[:n]) != nil || f.EtherType != ethernet.EtherTypeARP || p.UnmarshalBinary(f.Payload) != nil {
		klog.V(5).InfoS("Ignored malformed ARP frame", "interface", r.ifi.Name)
		return nil
	}
	if sameMAC(p.SenderHardwareAddr, r.ifi.HardwareAddr) {
		return nil // our own packets come back on some setups
	}
	if r.won.NoteClaim(p.SenderIP) {
		foreignClaims.WithLabelValues(r.ifi.Name).Inc()
		r.claims.Load().Record(p.SenderIP, p.SenderHardwareAddr, r.ifi.Name)
		klog.V(2).InfoS("Another MAC claims a VIP this node answers for", "ip", p.SenderIP, "mac", p.SenderHardwareAddr, "interface", r.ifi.Name)
	}
	// A request whose sender and target are the same address announces,
	// it does not ask: another host claiming the VIP, which NoteClaim
	// answered with a re-assertion if due. Replying would only echo it.
	if p.Operation != mdarp.OperationRequest || p.SenderIP == p.TargetIP || !r.Serving(p.TargetIP) {
		return nil
	}
	reply, err := mdarp.NewPacket(mdarp.OperationReply, r.ifi.HardwareAddr, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
	if err == nil {
		// On the Ethernet layer to whoever sent the request.
		err = r.send(reply, f.Source)
	}
	if err != nil {
		sendErrors.WithLabelValues(r.ifi.Name).Inc()
		klog.V(2).InfoS("ARP reply failed", "ip", p.TargetIP, "to", p.SenderIP, "err", err)
		return nil
	}
	repliesSent.WithLabelValues(r.ifi.Name).Inc()
	klog.V(5).InfoS("Answered ARP", "ip", p.TargetIP, "to", p.SenderIP, "interface", r.ifi.Name)
	return nil
}

// ClaimedSince reports whether another MAC claimed ip (sent ARP with it as
// sender address, as a successor's gratuitous ARP does) after t.
func (r *Responder) ClaimedSince(ip netip.Addr, t time.Time) bool {
	return r.won.ClaimedSince(ip, t)
}

// Close stops bursts and the read loop and closes the socket.
func (r *Responder) Close() error {
	r.won.Close()
	return r.conn.Close()
}

func sameMAC(a, b net.HardwareAddr) bool {
	return len(a) == len(b) && string(a) == string(b)
}
