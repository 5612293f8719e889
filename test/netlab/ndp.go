package netlab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
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

// Probe is the unicast twin of Solicit: it sends count neighbor solicitations
// for ip addressed to ip itself and to the link-layer address mac, the way a
// client's kernel re-checks a cached entry (neighbor unreachability
// detection, RFC 4861 7.3.3), one every interval, and returns the distinct
// MACs that answered (solicited advertisements for ip). It sends and reads on
// a packet socket, so the probe does not depend on the host's neighbour cache
// and what it reports is what crossed the wire.
func (h *Host) Probe(ctx context.Context, ip netip.Addr, mac net.HardwareAddr, count int, interval time.Duration) ([]net.HardwareAddr, error) {
	if !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("probe: %s is not an IPv6 address", ip)
	}
	var c *packet.Conn
	if err := InNetns(h.Netns, func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Datagram, unix.ETH_P_IPV6, nil)
		return err
	}); err != nil {
		return nil, fmt.Errorf("probe in %s: %w", h.Netns, err)
	}
	defer c.Close()
	src := h.IPv6.Addr()
	icmpMsg, err := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: h.MAC}},
	}, src, ip)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, ipv6.HeaderLen, ipv6.HeaderLen+len(icmpMsg))
	hdr[0] = 6 << 4
	binary.BigEndian.PutUint16(hdr[4:6], uint16(len(icmpMsg)))
	hdr[6] = 58 // ICMPv6
	hdr[7] = ndp.HopLimit
	s16, d16 := src.As16(), ip.As16()
	copy(hdr[8:24], s16[:])
	copy(hdr[24:40], d16[:])
	frame := append(hdr, icmpMsg...)

	buf := make([]byte, 1500)
	var macs []net.HardwareAddr
	seen := map[string]bool{}
	for i := 0; i < count && ctx.Err() == nil; i++ {
		if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: mac}); err != nil {
			return macs, fmt.Errorf("probe %s at %s in %s: %w", ip, mac, h.Netns, err)
		}
		until := time.Now().Add(interval)
		for time.Now().Before(until) {
			_ = c.SetReadDeadline(until)
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			b := buf[:n]
			if len(b) < ipv6.HeaderLen || b[6] != 58 {
				continue
			}
			end := min(len(b), ipv6.HeaderLen+int(binary.BigEndian.Uint16(b[4:6])))
			msg, err := ndp.ParseMessage(b[ipv6.HeaderLen:end])
			if err != nil {
				continue
			}
			na, ok := msg.(*ndp.NeighborAdvertisement)
			if !ok || na.TargetAddress != ip || !na.Solicited {
				continue // a takeover advertisement is no answer
			}
			// An answer to a unicast solicitation may leave out the
			// target's link-layer address (RFC 4861 7.2.4; Linux does):
			// the frame's source is then the answerer.
			answerer := from.(*packet.Addr).HardwareAddr
			for _, o := range na.Options {
				if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
					answerer = lla.Addr
				}
			}
			if !seen[answerer.String()] {
				seen[answerer.String()] = true
				macs = append(macs, slices.Clone(answerer))
			}
		}
	}
	return macs, ctx.Err()
}
