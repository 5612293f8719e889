// Package arp answers ARP requests for the IPv4 VIPs this node won, on one
// interface, with that interface's MAC, and sends a burst of gratuitous ARP
// when it takes a VIP over so that clients and switches move to it at once.
//
// The kernel itself never answers for the VIPs: kube-proxy in IPVS mode with
// strictARP binds them to kube-ipvs0 with arp_ignore=1/arp_announce=2.
package arp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	mdarp "github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// GratuitousSchedule is when the takeover packets go out, after the VIP is
// won: one at once for the fast path, two more to cover a lost frame or a
// switch port that was still learning.
var GratuitousSchedule = []time.Duration{0, 500 * time.Millisecond, time.Second}

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
)

// MustRegister adds the package's metrics to reg (once per process).
func MustRegister(reg prometheus.Registerer) {
	reg.MustRegister(repliesSent, gratuitousSent, sendErrors)
}

// Responder serves one interface.
type Responder struct {
	ifi    *net.Interface
	client *mdarp.Client

	mu  sync.Mutex
	ips map[netip.Addr]context.CancelFunc // won VIPs -> cancels their gratuitous burst
	// claims: when another MAC last claimed a VIP we serve (its gratuitous
	// ARP on takeover), so a stopping node knows its successor is live.
	claims map[netip.Addr]time.Time
	ctx    context.Context
	stopc  context.CancelFunc
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
	c, err := mdarp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("arp: opening socket on %q: %w", ifname, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Responder{ifi: ifi, client: c, ips: map[netip.Addr]context.CancelFunc{}, claims: map[netip.Addr]time.Time{}, ctx: ctx, stopc: cancel}, nil
}

// Interface is the served interface's name.
func (r *Responder) Interface() string { return r.ifi.Name }

// HardwareAddr is the MAC the responder answers with.
func (r *Responder) HardwareAddr() net.HardwareAddr { return r.ifi.HardwareAddr }

// SetIPs replaces the set of won IPv4 VIPs (other families are ignored).
// VIPs new to the set get a gratuitous burst; dropped ones stop being
// answered at once.
func (r *Responder) SetIPs(ips []netip.Addr) {
	want := map[netip.Addr]bool{}
	for _, ip := range ips {
		if ip = ip.Unmap(); ip.Is4() {
			want[ip] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ip, cancel := range r.ips {
		if !want[ip] {
			cancel()
			delete(r.ips, ip)
			klog.V(2).InfoS("Stopped answering ARP", "ip", ip, "interface", r.ifi.Name)
		}
	}
	for ip := range want {
		if _, ok := r.ips[ip]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(r.ctx)
		r.ips[ip] = cancel
		klog.V(2).InfoS("Answering ARP", "ip", ip, "interface", r.ifi.Name, "mac", r.ifi.HardwareAddr)
		go r.gratuitous(ctx, ip)
	}
}

// Serving reports whether ip is currently answered.
func (r *Responder) Serving(ip netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ips[ip.Unmap()]
	return ok
}

func (r *Responder) gratuitous(ctx context.Context, ip netip.Addr) {
	start := time.Now()
	for _, at := range GratuitousSchedule {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		// Request form (sender IP = target IP, broadcast): every Linux
		// version treats it as gratuitous and overrides an existing
		// neighbour entry even within its locktime.
		p, err := mdarp.NewPacket(mdarp.OperationRequest, r.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
		if err == nil {
			err = r.client.WriteTo(p, ethernet.Broadcast)
		}
		if err != nil {
			sendErrors.WithLabelValues(r.ifi.Name).Inc()
			klog.V(2).InfoS("Gratuitous ARP failed", "ip", ip, "interface", r.ifi.Name, "err", err)
			continue
		}
		gratuitousSent.WithLabelValues(r.ifi.Name).Inc()
	}
}

// Run answers requests until ctx ends or Close is called.
func (r *Responder) Run(ctx context.Context) error {
	go func() {
		select {
		case <-ctx.Done():
		case <-r.ctx.Done():
		}
		_ = r.client.SetReadDeadline(time.Now())
	}()
	for {
		p, eth, err := r.client.Read()
		if err != nil {
			if ctx.Err() != nil || r.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("arp: reading on %s: %w", r.ifi.Name, err)
		}
		if eth == nil || sameMAC(p.SenderHardwareAddr, r.ifi.HardwareAddr) {
			continue // our own packets come back on some setups
		}
		if r.Serving(p.SenderIP) {
			r.mu.Lock()
			r.claims[p.SenderIP] = time.Now()
			r.mu.Unlock()
		}
		if p.Operation != mdarp.OperationRequest {
			continue
		}
		if !r.Serving(p.TargetIP) {
			continue
		}
		if err := r.client.Reply(p, r.ifi.HardwareAddr, p.TargetIP); err != nil {
			sendErrors.WithLabelValues(r.ifi.Name).Inc()
			klog.V(2).InfoS("ARP reply failed", "ip", p.TargetIP, "to", p.SenderIP, "err", err)
			continue
		}
		repliesSent.WithLabelValues(r.ifi.Name).Inc()
		klog.V(5).InfoS("Answered ARP", "ip", p.TargetIP, "to", p.SenderIP, "interface", r.ifi.Name)
	}
}

// ClaimedSince reports whether another MAC claimed ip (sent ARP with it as
// sender address, as a successor's gratuitous ARP does) after t.
func (r *Responder) ClaimedSince(ip netip.Addr, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.claims[ip.Unmap()]
	return ok && c.After(t)
}

// Close stops bursts and the read loop and closes the socket.
func (r *Responder) Close() error {
	r.stopc()
	r.mu.Lock()
	r.ips = map[netip.Addr]context.CancelFunc{}
	r.mu.Unlock()
	return r.client.Close()
}

func sameMAC(a, b net.HardwareAddr) bool {
	return len(a) == len(b) && string(a) == string(b)
}
