package ndp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	mdndp "github.com/mdlayher/ndp"
	"golang.org/x/net/bpf"
)

// ipv6Packet builds an IPv6 packet carrying m from src to dst with a correct
// checksum; edit mutates the result before it is returned.
func ipv6Packet(t *testing.T, src, dst netip.Addr, m mdndp.Message, edit func(b []byte)) []byte {
	t.Helper()
	body, err := mdndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 40, 40+len(body))
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:6], uint16(len(body)))
	b[6], b[7] = 58, 255
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	b = append(b, body...)
	if edit != nil {
		edit(b)
	}
	return b
}

func TestParse(t *testing.T) {
	var (
		vip    = netip.MustParseAddr("2001:db8::200")
		client = netip.MustParseAddr("2001:db8::100")
		group  = netip.MustParseAddr("ff02::1:ff00:200")
		mac    = net.HardwareAddr{2, 0, 0x5e, 0, 0, 1}
		srcLL  = &mdndp.LinkLayerAddress{Direction: mdndp.Source, Addr: mac}
		tgtLL  = &mdndp.LinkLayerAddress{Direction: mdndp.Target, Addr: mac}
		ns     = &mdndp.NeighborSolicitation{TargetAddress: vip, Options: []mdndp.Option{srcLL}}
		dad    = &mdndp.NeighborSolicitation{TargetAddress: vip}
		na     = &mdndp.NeighborAdvertisement{Override: true, TargetAddress: vip, Options: []mdndp.Option{tgtLL}}
	)
	for _, tt := range []struct {
		name    string
		pkt     []byte
		wantErr string // substring; "" means valid
	}{
		{"multicast solicitation", ipv6Packet(t, client, group, ns, nil), ""},
		{"unicast solicitation (NUD) to the VIP", ipv6Packet(t, client, vip, ns, nil), ""},
		{"duplicate-address probe", ipv6Packet(t, netip.IPv6Unspecified(), group, dad, nil), ""},
		{"unsolicited advertisement", ipv6Packet(t, client, netip.MustParseAddr("ff02::1"), na, nil), ""},
		{"link padding after the payload", append(ipv6Packet(t, client, vip, ns, nil), 0, 0, 0, 0), ""},
		{"not IPv6", ipv6Packet(t, client, vip, ns, func(b []byte) { b[0] = 4 << 4 }), "not an IPv6"},
		{"too short", []byte{6 << 4, 0, 0}, "not an IPv6"},
		{"crossed a router", ipv6Packet(t, client, vip, ns, func(b []byte) { b[7] = 254 }), "hop limit 254"},
		{"not ICMPv6", ipv6Packet(t, client, vip, ns, func(b []byte) { b[6] = 17 }), "next header 17"},
		{"truncated", ipv6Packet(t, client, vip, ns, func(b []byte) { b[5] += 8 }), "truncated"},
		{"bad checksum", ipv6Packet(t, client, vip, ns, func(b []byte) { b[len(b)-1] ^= 1 }), "checksum"},
		{"non-zero code", ipv6Packet(t, client, vip, ns, func(b []byte) { b[41] = 1 }), "code 1"},
		{"probe to the VIP itself", ipv6Packet(t, netip.IPv6Unspecified(), vip, dad, nil), "solicited-node group"},
		{"probe with a source address option", ipv6Packet(t, netip.IPv6Unspecified(), group, ns, nil), "source link-layer"},
		{"multicast target", ipv6Packet(t, client, group, &mdndp.NeighborSolicitation{TargetAddress: group}, nil), "multicast target"},
		{"solicited advertisement to a group", ipv6Packet(t, client, netip.MustParseAddr("ff02::1"),
			&mdndp.NeighborAdvertisement{Solicited: true, TargetAddress: vip}, nil), "solicited advertisement"},
		{"router solicitation", ipv6Packet(t, client, netip.MustParseAddr("ff02::2"), &mdndp.RouterSolicitation{}, nil), "ICMPv6 message of 8 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parse(tt.pkt)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("parse: %v, want a valid packet", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("parse: %v, want an error containing %q", err, tt.wantErr)
			case err == nil && (p.msg == nil || !p.src.IsValid() || !p.dst.IsValid()):
				t.Fatalf("parse: %+v", p)
			}
		})
	}
}

func TestNDPFilter(t *testing.T) {
	vm, err := bpf.NewVM(ndpFilter)
	if err != nil {
		t.Fatal(err)
	}
	var (
		vip    = netip.MustParseAddr("2001:db8::200")
		client = netip.MustParseAddr("2001:db8::100")
		ns     = &mdndp.NeighborSolicitation{TargetAddress: vip}
		na     = &mdndp.NeighborAdvertisement{TargetAddress: vip}
	)
	for _, tt := range []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"solicitation", ipv6Packet(t, client, vip, ns, nil), true},
		{"advertisement", ipv6Packet(t, client, vip, na, nil), true},
		{"router solicitation", ipv6Packet(t, client, vip, &mdndp.RouterSolicitation{}, nil), false},
		{"hop limit 254", ipv6Packet(t, client, vip, ns, func(b []byte) { b[7] = 254 }), false},
		{"UDP", ipv6Packet(t, client, vip, ns, func(b []byte) { b[6] = 17 }), false},
		{"too short", []byte{6 << 4}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, err := vm.Run(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tt.pass {
				t.Errorf("filter kept %d bytes, want pass=%v", n, tt.pass)
			}
		})
	}
	if len(linkFilter) != len(ndpFilter)+3 {
		t.Errorf("linkFilter has %d instructions, want the packet-type check before ndpFilter", len(linkFilter))
	}
}
