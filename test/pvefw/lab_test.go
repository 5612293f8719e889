package pvefw

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvesim"
)

// fixture is a lab with two nodes and a client, and a simulator holding one
// VM per node whose net0 has the node's MAC, the VM firewall and the IP
// filter on, and ipfilter-net0 holding the node's own addresses.
type fixture struct {
	lab    *netlab.Lab
	sim    *pvesim.TestServer
	fw     *Firewall
	n1, n2 *netlab.Host
	client *netlab.Host
	cm     *netlab.Monitor // on the client's link: what the bridge delivered
}

const vm1, vm2 = 100, 101

func newFixture(t *testing.T, datacenter bool, opts Options) *fixture {
	t.Helper()
	lab := netlab.New(t, netlab.Options{Nodes: 2})
	netlab.RequireTools(t, "nft", "ping")
	sim := pvesim.NewTestServer(t, pvesim.Options{})
	f := &fixture{lab: lab, sim: sim, n1: lab.Nodes[0], n2: lab.Nodes[1], client: lab.Client}
	for i, h := range lab.Nodes {
		vmid := vm1 + i
		if err := sim.AddVM(pvesim.VM{VMID: vmid, Node: "pve1", Name: h.Name,
			Nets: map[int]string{0: "virtio=" + strings.ToUpper(h.MAC.String()) + ",bridge=vmbr0,firewall=1"}}); err != nil {
			t.Fatal(err)
		}
		sim.SetFirewallOptions(vmid, true, true)
		sim.SeedIPSet(vmScope(vmid), "ipfilter-net0",
			pve.IPSetEntry{CIDR: h.IPv4.Addr().String()}, pve.IPSetEntry{CIDR: h.IPv6.Addr().String()})
	}
	sim.SetClusterFirewall(datacenter)
	if opts.Period == 0 {
		opts.Period = time.Hour // tests drive passes with ApplyNow
	}
	opts.Logf = t.Logf
	f.fw = Start(t, lab, sim, opts)
	var err error
	if f.cm, err = f.client.Watch(); err != nil {
		t.Fatal(err)
	}
	return f
}

func vmScope(vmid int) pve.Scope { return pve.VMScope(pve.VMRef{Node: "pve1", VMID: vmid}) }

func (f *fixture) admit(t *testing.T, vmid int, ip netip.Addr) {
	t.Helper()
	f.sim.SeedIPSet(vmScope(vmid), "ipfilter-net0", pve.IPSetEntry{CIDR: ip.String(), Comment: "pvelb: test"})
	if err := f.fw.ApplyNow(); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) drops(t *testing.T, vmid int) uint64 {
	t.Helper()
	n, err := f.fw.Drops(vmid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sender writes raw ARP and IPv6 frames from a host's lab link, as an
// announcer does, whatever addresses the host has.
type sender struct {
	h   *netlab.Host
	arp *arp.Client
	ip6 *packet.Conn
}

func newSender(t *testing.T, h *netlab.Host) *sender {
	t.Helper()
	s := &sender{h: h}
	if err := netlab.InNetns(h.Netns, func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		if s.arp, err = arp.Dial(ifi); err != nil {
			return err
		}
		s.ip6, err = packet.Listen(ifi, packet.Datagram, unix.ETH_P_IPV6, nil)
		return err
	}); err != nil {
		t.Fatalf("sockets in %s: %v", h.Netns, err)
	}
	t.Cleanup(func() { _ = s.arp.Close(); _ = s.ip6.Close() })
	return s
}

// sendARP sends one ARP packet with sender ip and the host's MAC; a request
// for ip itself is a gratuitous ARP, a reply goes to the client.
func (s *sender) sendARP(t *testing.T, op arp.Operation, sender, target netip.Addr, to net.HardwareAddr) {
	t.Helper()
	p, err := arp.NewPacket(op, s.h.MAC, sender, to, target)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.arp.WriteTo(p, to); err != nil {
		t.Fatalf("arp from %s: %v", s.h.Name, err)
	}
}

var markerSeq atomic.Int32

// delivered reports whether the client received a frame matching match that
// was sent from s before this call: it sends a marker (an ARP request from
// the host's own address, which every filter passes) and, once the marker
// has arrived, looks for the frame before it. Frames from one port cross the
// bridge in order, so what was not delivered by then was dropped.
func (s *sender) delivered(t *testing.T, m *netlab.Monitor, match func(netlab.Event) bool) bool {
	t.Helper()
	own := s.h.IPv4.Addr()
	marker := netip.AddrFrom4([4]byte{192, 0, 2, byte(150 + markerSeq.Add(1)%40)})
	s.sendARP(t, arp.OperationRequest, own, marker, ethernet.Broadcast)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	isMarker := func(e netlab.Event) bool {
		return e.Kind == netlab.ARPRequest && e.SenderIP == own && e.TargetIP == marker
	}
	mev, err := m.Wait(ctx, isMarker)
	if err != nil {
		t.Fatalf("marker from %s never arrived: %v", s.h.Name, err)
	}
	for _, e := range m.Events() {
		if !e.Time.After(mev.Time) && !isMarker(e) && match(e) {
			return true
		}
	}
	return false
}

// sendNA sends an unsolicited neighbor advertisement for target from the
// IPv6 source src to all nodes.
func (s *sender) sendNA(t *testing.T, src, target netip.Addr) {
	t.Helper()
	dst := netip.MustParseAddr("ff02::1")
	msg, err := ndp.MarshalMessageChecksum(&ndp.NeighborAdvertisement{
		Override: true, TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: s.h.MAC}},
	}, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, ipv6.HeaderLen, ipv6.HeaderLen+len(msg))
	hdr[0] = 6 << 4
	binary.BigEndian.PutUint16(hdr[4:6], uint16(len(msg)))
	hdr[6], hdr[7] = 58, ndp.HopLimit
	s16, d16 := src.As16(), dst.As16()
	copy(hdr[8:24], s16[:])
	copy(hdr[24:40], d16[:])
	allNodes := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	if _, err := s.ip6.WriteTo(append(hdr, msg...), &packet.Addr{HardwareAddr: allNodes}); err != nil {
		t.Fatalf("NA from %s: %v", s.h.Name, err)
	}
}

// udpDelivered reports whether a datagram the host sends from src reaches
// to. src is added to the sender's loopback if it is not its own, and to's
// MAC is pinned in the sender's neighbour cache, so no ARP or NDP (which the
// filter may drop too) decides the outcome.
func udpDelivered(t *testing.T, from *netlab.Host, src netip.Addr, to *netlab.Host) bool {
	t.Helper()
	ctx := context.Background()
	dst, bits := to.IPv4.Addr(), "/32"
	if src.Is6() {
		dst, bits = to.IPv6.Addr(), "/128"
	}
	if src != from.IPv4.Addr() && src != from.IPv6.Addr() {
		if _, err := from.Run(ctx, "ip", "addr", "replace", src.String()+bits, "dev", "lo", "nodad"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := from.Run(ctx, "ip", "neigh", "replace", dst.String(), "lladdr", to.MAC.String(), "dev", from.Link, "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	pc, err := to.ListenPacket("udp", net.JoinHostPort(dst.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var c net.Conn
	if err := netlab.InNetns(from.Netns, func() (err error) {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(pc.LocalAddr().(*net.UDPAddr).AddrPort()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("pvefw")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 16)
	n, addr, err := pc.ReadFrom(buf)
	return err == nil && string(buf[:n]) == "pvefw" && addr.(*net.UDPAddr).AddrPort().Addr() == src
}

func isARP(op netlab.Kind, sender netip.Addr) func(netlab.Event) bool {
	return func(e netlab.Event) bool { return e.Kind == op && e.SenderIP == sender }
}

func isNA(src, target netip.Addr) func(netlab.Event) bool {
	return func(e netlab.Event) bool {
		return e.Kind == netlab.NeighborAdvertisement && e.SenderIP == src && e.TargetIP == target
	}
}

func ping(t *testing.T, from *netlab.Host, to netip.Addr) {
	t.Helper()
	var err error
	for range 3 { // the first echo may wait for neighbour discovery
		if err = from.Ping(context.Background(), to, 2*time.Second); err == nil {
			return
		}
	}
	t.Errorf("%s cannot ping %s through the firewall: %v", from.Name, to, err)
}

// The classic firewall: a node reaches the client from its own addresses;
// ARP for a VIP missing from its ipfilter-net0 is dropped and counted, and
// passes once the VIP is admitted; for IPv6 only the source address counts.
func TestLabClassic(t *testing.T) {
	f := newFixture(t, true, Options{Variant: Classic})
	s1, s2 := newSender(t, f.n1), newSender(t, f.n2)
	vip, vip6 := netlab.VIP4(0), netlab.VIP6(0)

	ping(t, f.n1, f.client.IPv4.Addr())
	ping(t, f.n1, f.client.IPv6.Addr())
	ping(t, f.client, f.n2.IPv4.Addr())

	before1, before2 := f.drops(t, vm1), f.drops(t, vm2)
	s1.sendARP(t, arp.OperationRequest, vip, vip, ethernet.Broadcast) // gratuitous
	s1.sendARP(t, arp.OperationReply, vip, f.client.IPv4.Addr(), f.client.MAC)
	if s1.delivered(t, f.cm, func(e netlab.Event) bool { return e.SenderIP == vip }) {
		t.Errorf("ARP for %s, not in node1's ipfilter-net0, reached the client:\n%s", vip, f.cm.Timeline(vip))
	}
	if got := f.drops(t, vm1); got < before1+2 {
		t.Errorf("vm %d drops %d -> %d, want at least 2 more", vm1, before1, got)
	}
	if got := f.drops(t, vm2); got != before2 {
		t.Errorf("vm %d drops %d -> %d for node1's frames", vm2, before2, got)
	}

	// An ARP probe (sender 0.0.0.0) is refused too: ebtables lists only the
	// set's addresses.
	s2.sendARP(t, arp.OperationRequest, netip.IPv4Unspecified(), vip, ethernet.Broadcast)
	if s2.delivered(t, f.cm, isARP(netlab.ARPRequest, netip.IPv4Unspecified())) {
		t.Error("ARP probe from 0.0.0.0 reached the client")
	}

	f.admit(t, vm1, vip)
	s1.sendARP(t, arp.OperationRequest, vip, vip, ethernet.Broadcast)
	if !s1.delivered(t, f.cm, isARP(netlab.ARPRequest, vip)) {
		t.Errorf("gratuitous ARP for %s dropped after admitting it:\n%s", vip, f.fw.Ruleset())
	}
	// node2 still may not.
	s2.sendARP(t, arp.OperationReply, vip, f.client.IPv4.Addr(), f.client.MAC)
	if s2.delivered(t, f.cm, isARP(netlab.ARPReply, vip)) {
		t.Error("node2's ARP reply for node1's VIP reached the client")
	}

	// IP from an address missing from the set is dropped, from the
	// node's own ones it passes.
	if !udpDelivered(t, f.n1, f.n1.IPv4.Addr(), f.client) || !udpDelivered(t, f.n1, f.n1.IPv6.Addr(), f.client) {
		t.Error("UDP from node1's own addresses dropped")
	}
	if udpDelivered(t, f.n2, vip, f.client) || udpDelivered(t, f.n2, vip6, f.client) {
		t.Errorf("UDP from %s or %s, not in node2's set, reached the client", vip, vip6)
	}
	if !udpDelivered(t, f.n1, vip, f.client) {
		t.Errorf("UDP from the admitted %s dropped", vip)
	}

	// IPv6: the filter looks at the source address only.
	ll := LinkLocal(f.n1.MAC)
	s1.sendNA(t, vip6, vip6)
	if s1.delivered(t, f.cm, isNA(vip6, vip6)) {
		t.Errorf("NA sent from %s, not in the set, reached the client", vip6)
	}
	s1.sendNA(t, ll, vip6)
	if !s1.delivered(t, f.cm, isNA(ll, vip6)) {
		t.Errorf("NA for %s from the MAC's link-local %s dropped: classic admits it implicitly", vip6, ll)
	}
	s1.sendNA(t, f.n1.IPv6.Addr(), vip6)
	if !s1.delivered(t, f.cm, isNA(f.n1.IPv6.Addr(), vip6)) {
		t.Errorf("NA for %s from node1's admitted %s dropped", vip6, f.n1.IPv6.Addr())
	}
	other := netip.MustParseAddr("fe80::1")
	s1.sendNA(t, other, f.n1.IPv6.Addr())
	if s1.delivered(t, f.cm, isNA(other, f.n1.IPv6.Addr())) {
		t.Errorf("NA from another link-local %s passed (fe80::/10 is nomatch)", other)
	}
	f.admit(t, vm1, vip6)
	s1.sendNA(t, vip6, vip6)
	if !s1.delivered(t, f.cm, isNA(vip6, vip6)) {
		t.Errorf("NA from %s dropped after admitting it", vip6)
	}
}

// The nftables firewall: the same outgoing filter, but an explicit set gets
// no implicit link-local; incoming ARP for an address missing from the set
// reaches the VM (proxmox-firewall accepts ARP before its own target rule),
// unless DropInboundARP asks for what that rule says.
func TestLabNftables(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("DropInboundARP=%v", strict), func(t *testing.T) {
			f := newFixture(t, true, Options{Variant: Nftables, DropInboundARP: strict})
			s1, sc := newSender(t, f.n1), newSender(t, f.client)
			vip, vip6 := netlab.VIP4(1), netlab.VIP6(1)

			ping(t, f.n1, f.client.IPv4.Addr())
			ping(t, f.client, f.n1.IPv6.Addr())

			before := f.drops(t, vm1)
			s1.sendARP(t, arp.OperationRequest, vip, vip, ethernet.Broadcast)
			if s1.delivered(t, f.cm, isARP(netlab.ARPRequest, vip)) {
				t.Errorf("gratuitous ARP for %s, not in the set, reached the client", vip)
			}
			if got := f.drops(t, vm1); got < before+1 {
				t.Errorf("drops %d -> %d", before, got)
			}

			// The client asks node1's port for the VIP.
			nm, err := f.n1.Watch()
			if err != nil {
				t.Fatal(err)
			}
			before = f.drops(t, vm1)
			sc.sendARP(t, arp.OperationRequest, f.client.IPv4.Addr(), vip, ethernet.Broadcast)
			// Marker: the client's request for node1's own address, which
			// every filter lets in.
			sc.sendARP(t, arp.OperationRequest, f.client.IPv4.Addr(), f.n1.IPv4.Addr(), ethernet.Broadcast)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			mk, err := nm.Wait(ctx, func(e netlab.Event) bool { return e.Kind == netlab.ARPRequest && e.TargetIP == f.n1.IPv4.Addr() })
			if err != nil {
				t.Fatal(err)
			}
			got := false
			for _, e := range nm.Events() {
				got = got || e.Kind == netlab.ARPRequest && e.TargetIP == vip && !e.Time.After(mk.Time)
			}
			if got == strict {
				t.Errorf("node1 received the ARP request for %s: %v, want %v", vip, got, !strict)
			}
			if after := f.drops(t, vm1); strict && after < before+1 {
				t.Errorf("inbound ARP drop not counted: %d -> %d", before, after)
			}

			// IPv6: the explicit set has no link-local.
			ll := LinkLocal(f.n1.MAC)
			s1.sendNA(t, ll, vip6)
			if s1.delivered(t, f.cm, isNA(ll, vip6)) {
				t.Errorf("NA from the link-local %s passed an explicit set without it", ll)
			}
			s1.sendNA(t, vip6, vip6)
			if s1.delivered(t, f.cm, isNA(vip6, vip6)) {
				t.Errorf("NA from %s, not in the set, reached the client", vip6)
			}

			if udpDelivered(t, f.n1, vip, f.client) || !udpDelivered(t, f.n1, f.n1.IPv4.Addr(), f.client) {
				t.Errorf("UDP: from %s delivered, or from node1's own address dropped", vip)
			}

			f.admit(t, vm1, vip)
			f.admit(t, vm1, vip6)
			s1.sendARP(t, arp.OperationReply, vip, f.client.IPv4.Addr(), f.client.MAC)
			s1.sendNA(t, vip6, vip6)
			if !s1.delivered(t, f.cm, isARP(netlab.ARPReply, vip)) || !s1.delivered(t, f.cm, isNA(vip6, vip6)) {
				t.Errorf("ARP or NA for the admitted VIPs dropped:\n%s", f.fw.Ruleset())
			}
		})
	}
}

// With the datacenter firewall off nothing is dropped, whatever the VMs
// say, and turning it on bites within a pass of the loop.
func TestLabDatacenterOffAndLoop(t *testing.T) {
	f := newFixture(t, false, Options{Variant: Classic, Period: 200 * time.Millisecond})
	s1 := newSender(t, f.n1)
	vip := netlab.VIP4(2)

	s1.sendARP(t, arp.OperationRequest, vip, vip, ethernet.Broadcast)
	if !s1.delivered(t, f.cm, isARP(netlab.ARPRequest, vip)) {
		t.Error("ARP for a VIP dropped with the datacenter firewall off")
	}
	if c, err := f.fw.Counters(); err != nil || len(c) != 0 {
		t.Errorf("counters %v, %v; want none", c, err)
	}

	f.sim.SetClusterFirewall(true) // no ApplyNow: the loop picks it up
	deadline := time.Now().Add(5 * time.Second)
	for f.drops(t, vm1) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no drop 5 s after turning the datacenter firewall on; ruleset:\n%s", f.fw.Ruleset())
		}
		s1.sendARP(t, arp.OperationRequest, vip, vip, ethernet.Broadcast)
		time.Sleep(50 * time.Millisecond)
	}
	// Counts survive the loop's passes.
	n := f.drops(t, vm1)
	time.Sleep(500 * time.Millisecond)
	if got := f.drops(t, vm1); got < n {
		t.Errorf("drops fell from %d to %d across passes", n, got)
	}

	f.sim.SetClusterFirewall(false)
	if err := f.fw.ApplyNow(); err != nil {
		t.Fatal(err)
	}
	s1.sendARP(t, arp.OperationRequest, vip, vip, ethernet.Broadcast)
	if !s1.delivered(t, f.cm, isARP(netlab.ARPRequest, vip)) {
		t.Error("ARP for a VIP dropped after turning the datacenter firewall off")
	}
	if got := f.drops(t, vm1); got < n {
		t.Errorf("drops reset from %d to %d when the firewall went off", n, got)
	}
}

// Close removes the table and only it; the lab's teardown removes the rest.
func TestLabClose(t *testing.T) {
	lab := netlab.New(t, netlab.Options{Nodes: 1})
	netlab.RequireTools(t, "nft")
	sim := pvesim.NewTestServer(t, pvesim.Options{})
	h := lab.Nodes[0]
	if err := sim.AddVM(pvesim.VM{VMID: vm1, Node: "pve1", Nets: map[int]string{0: "virtio=" + h.MAC.String() + ",firewall=1"}}); err != nil {
		t.Fatal(err)
	}
	// A NIC with a MAC no lab host has is skipped, not an error.
	if err := sim.AddVM(pvesim.VM{VMID: vm2, Node: "pve1", Nets: map[int]string{0: "virtio=BC:24:11:00:00:01,firewall=1"}}); err != nil {
		t.Fatal(err)
	}
	sim.SetClusterFirewall(true)
	sim.SetFirewallOptions(vm1, true, true)
	sim.SetFirewallOptions(vm2, true, true)
	other := exec.Command("ip", "netns", "exec", lab.Switch, "nft", "add table bridge other")
	if out, err := other.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var logged []string
	fw := New(lab, sim, Options{Variant: Nftables, Logf: func(format string, args ...any) {
		logged = append(logged, fmt.Sprintf(format, args...))
	}})
	for range 2 {
		if err := fw.ApplyNow(); err != nil {
			t.Fatal(err)
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "vm 101 net0: no lab host has MAC bc:24:11:00:00:01") {
		t.Errorf("logged %q, want the unmatched NIC once", logged)
	}
	if !strings.Contains(fw.Ruleset(), `iifname "`+h.BridgePort()+`"`) || strings.Contains(fw.Ruleset(), "vm101") {
		t.Errorf("ruleset:\n%s", fw.Ruleset())
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", lab.Switch, "nft", "list", "tables").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "table bridge other" {
		t.Errorf("tables after Close: %q, %v", out, err)
	}
	if err := fw.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	lab.Close()
	if err := fw.Close(); err != nil {
		t.Errorf("Close after the lab is gone: %v", err)
	}
}
