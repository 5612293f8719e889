package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// Solicit is Arping for IPv6: it sends count neighbor solicitations for ip to
// its solicited-node multicast group, one every interval, and returns the
// distinct target MACs of the advertisements that answered.
func (h *Host) Solicit(ctx context.Context, ip netip.Addr, count int, interval time.Duration) ([]net.HardwareAddr, error) {
	if !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("solicit: %s is not an IPv6 address", ip)
	}
	var ifi *net.Interface
	var ic *icmp.PacketConn
	if err := InNetns(h.Netns, func() (err error) {
		if ifi, err = net.InterfaceByName(h.Link); err != nil {
			return err
		}
		ic, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	}); err != nil {
		return nil, fmt.Errorf("solicit in %s: %w", h.Netns, err)
	}
	defer ic.Close()
	c := ic.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		return nil, err
	}
	group, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return nil, err
	}
	b, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: h.MAC}},
	})
	if err != nil {
		return nil, err
	}
	// Interface by index, no zone name: Go resolves zone names with the
	// process's (host) interface table, wrong for a socket in a lab.
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, IfIndex: ifi.Index}
	buf := make([]byte, 1500)
	var macs []net.HardwareAddr
	seen := map[string]bool{}
	for i := 0; i < count && ctx.Err() == nil; i++ {
		if _, err := c.WriteTo(b, cm, &net.IPAddr{IP: group.AsSlice()}); err != nil {
			return macs, fmt.Errorf("solicit %s in %s: %w", ip, h.Netns, err)
		}
		until := time.Now().Add(interval)
		for time.Now().Before(until) {
			_ = c.SetReadDeadline(until)
			n, _, _, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			msg, err := ndp.ParseMessage(buf[:n])
			if err != nil {
				continue
			}
			na, ok := msg.(*ndp.NeighborAdvertisement)
			if !ok || na.TargetAddress != ip {
				continue
			}
			for _, o := range na.Options {
				if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target && !seen[lla.Addr.String()] {
					seen[lla.Addr.String()] = true
					macs = append(macs, lla.Addr)
				}
			}
		}
	}
	return macs, ctx.Err()
}
