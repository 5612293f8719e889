package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// minProbeInterval keeps a mistaken interval from flooding the lab.
const minProbeInterval = time.Millisecond

// Prober keeps asking the lab who has some VIPs; see Host.ProbeVIPs.
type Prober struct {
	cancel context.CancelFunc
	done   chan struct{}
	rounds atomic.Int64

	mu  sync.Mutex
	err error // the first failed send
}

// ProbeVIPs asks for every one of vips now and then every interval, until ctx
// ends or Stop: a broadcast ARP request for an IPv4 address, a neighbor
// solicitation to its solicited-node multicast group for an IPv6 one. It
// does not read the answers; a Monitor records them, so a timeline shows who
// answers at every moment even when nobody announces. Every VIP must be a
// lab address (Subnet4 or Subnet6), and frames leave only on the host's lab
// link. A failed send does not stop probing (a test may take the link down);
// Stop reports the first one. The lab stops the prober on Close.
func (h *Host) ProbeVIPs(ctx context.Context, vips []netip.Addr, every time.Duration) (*Prober, error) {
	if every < minProbeInterval {
		return nil, fmt.Errorf("probe: interval %v is under %v", every, minProbeInterval)
	}
	var want4, want6 bool
	for _, ip := range vips {
		switch {
		case Subnet4.Contains(ip):
			want4 = true
		case Subnet6.Contains(ip): // never a zoned or IPv4-mapped address
			want6 = true
		default:
			return nil, fmt.Errorf("probe: %s is not a lab address (%s, %s)", ip, Subnet4, Subnet6)
		}
	}
	var ifi *net.Interface
	var ac *arp.Client
	var ic *icmp.PacketConn
	err := InNetns(h.Netns, func() (err error) {
		if ifi, err = net.InterfaceByName(h.Link); err != nil {
			return err
		}
		if want4 {
			if ac, err = arp.Dial(ifi); err != nil {
				return err
			}
		}
		if want6 {
			ic, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		}
		return err
	})
	closeAll := func() {
		if ac != nil {
			_ = ac.Close()
		}
		if ic != nil {
			_ = ic.Close()
		}
	}
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("probe from %s: %w", h.Netns, err)
	}
	var c6 *ipv6.PacketConn
	if ic != nil {
		c6 = ic.IPv6PacketConn()
		// Nothing is read from this socket: let nothing queue on it.
		var f ipv6.ICMPFilter
		f.SetAll(true)
		if err := c6.SetICMPFilter(&f); err != nil {
			closeAll()
			return nil, fmt.Errorf("probe from %s: %w", h.Netns, err)
		}
	}
	// By interface index, no zone name: see Solicit.
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, IfIndex: ifi.Index}
	ask := func(ip netip.Addr) error {
		if ip.Is4() {
			return ac.Request(ip)
		}
		b, group, err := solicitation(ip, h.MAC)
		if err == nil {
			_, err = c6.WriteTo(b, cm, &net.IPAddr{IP: group.AsSlice()})
		}
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	p := &Prober{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer closeAll()
		t := time.NewTicker(every)
		defer t.Stop()
		started, sent6 := time.Now(), false
		for ctx.Err() == nil {
			for _, ip := range vips {
				err := ask(ip)
				if err == nil {
					sent6 = sent6 || ip.Is6()
					continue
				}
				// IPv6 on a link brought up a moment ago has no multicast
				// route yet: the kernel adds it shortly after. Not a
				// failure of what is being watched.
				if errors.Is(err, syscall.ENETUNREACH) && ip.Is6() && !sent6 && time.Since(started) < linkSettle {
					continue
				}
				p.fail(fmt.Errorf("probe %s from %s: %w", ip, h.Netns, err))
			}
			p.rounds.Add(1)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}()
	h.lab.onClose(func() { _ = p.Stop() })
	return p, nil
}

// linkSettle bounds how long after start a prober forgives IPv6 sends that
// find no route (see the loop in ProbeVIPs).
const linkSettle = 3 * time.Second

func (p *Prober) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

// Rounds is how many times the prober has asked for all its VIPs.
func (p *Prober) Rounds() int { return int(p.rounds.Load()) }

// Stop stops probing, waits until no more is sent and returns the first
// failed send. It is safe to call more than once.
func (p *Prober) Stop() error {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// solicitation returns a multicast neighbor solicitation for ip from mac and
// the solicited-node group to send it to.
func solicitation(ip netip.Addr, mac net.HardwareAddr) ([]byte, netip.Addr, error) {
	group, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	b, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}},
	})
	return b, group, err
}
