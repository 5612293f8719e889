package bgp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

var testConfig = Config{RouterID: netip.MustParseAddr("192.0.2.11"), LocalASN: 64512, ListenPort: NoListen}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "valid", mod: func(*Config) {}},
		{name: "listener default", mod: func(c *Config) { c.ListenPort = 0 }},
		{name: "listener port", mod: func(c *Config) { c.ListenPort = 1790 }},
		{name: "no router ID", mod: func(c *Config) { c.RouterID = netip.Addr{} }, wantErr: `routerID: must be a non-zero IPv4 address, got ""`},
		{name: "IPv6 router ID", mod: func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, wantErr: "routerID: must be a non-zero IPv4 address, got \"2001:db8::1\""},
		{name: "zero ASN", mod: func(c *Config) { c.LocalASN = 0 }, wantErr: "localASN: must be 1-4294967295"},
		{name: "bad port", mod: func(c *Config) { c.ListenPort = -2 }, wantErr: "listenPort: must be -1"},
		{name: "port too big", mod: func(c *Config) { c.ListenPort = 70000 }, wantErr: "listenPort"},
		{name: "v6 next hop in v4 field", mod: func(c *Config) { c.NextHopIPv4 = netip.MustParseAddr("2001:db8::1") }, wantErr: "nextHopIPv4: must be an IPv4 address"},
		{name: "v4 next hop in v6 field", mod: func(c *Config) { c.NextHopIPv6 = netip.MustParseAddr("192.0.2.1") }, wantErr: "nextHopIPv6: must be an IPv6 address"},
		{name: "negative retry", mod: func(c *Config) { c.ConnectRetry = -time.Second }, wantErr: "connectRetry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig
			tt.mod(&c)
			err := c.Validate()
			checkErr(t, err, tt.wantErr)
			if _, nerr := New(c); (nerr == nil) != (tt.wantErr == "") {
				t.Fatalf("New: %v, want error %v", nerr, tt.wantErr != "")
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}

func TestPeerValidate(t *testing.T) {
	base := Peer{Name: "tor", Address: netip.MustParseAddr("192.0.2.1"), ASN: 64512}
	tests := []struct {
		name    string
		mod     func(*Peer)
		wantErr string
	}{
		{name: "valid iBGP with defaults", mod: func(*Peer) {}},
		{name: "valid eBGP multihop", mod: func(p *Peer) { p.ASN = 64500; p.EBGPMultihopTTL = 3 }},
		{name: "valid v6 with source", mod: func(p *Peer) {
			p.Address = netip.MustParseAddr("2001:db8::1")
			p.SourceAddress = netip.MustParseAddr("2001:db8::11")
		}},
		{name: "valid graceful restart", mod: func(p *Peer) { p.GracefulRestart = true; p.RestartTime = 4095 * time.Second }},
		{name: "no address", mod: func(p *Peer) { p.Address = netip.Addr{} }, wantErr: `peer tor (): address: must be a unicast IP address`},
		{name: "multicast", mod: func(p *Peer) { p.Address = netip.MustParseAddr("224.0.0.5") }, wantErr: "address: must be a unicast"},
		{name: "zone", mod: func(p *Peer) { p.Address = netip.MustParseAddr("fe80::1%eth0") }, wantErr: "address: zones"},
		{name: "zero peer ASN", mod: func(p *Peer) { p.ASN = 0 }, wantErr: "peerASN: must be 1-4294967295"},
		{name: "hold zero means default", mod: func(p *Peer) { p.HoldTime = 0 }},
		{name: "hold too short", mod: func(p *Peer) { p.HoldTime = 2 * time.Second }, wantErr: "holdTime: must be whole seconds from 3s"},
		{name: "hold fractional", mod: func(p *Peer) { p.HoldTime = 3500 * time.Millisecond }, wantErr: "holdTime"},
		{name: "keepalive not below hold", mod: func(p *Peer) { p.HoldTime = 9 * time.Second; p.KeepaliveTime = 9 * time.Second }, wantErr: "keepaliveTime: must be whole seconds, at least 1s and shorter than holdTime 9s"},
		{name: "keepalive explicit", mod: func(p *Peer) { p.HoldTime = 9 * time.Second; p.KeepaliveTime = time.Second }},
		{name: "password too long", mod: func(p *Peer) { p.Password = Secret(strings.Repeat("x", 81)) }, wantErr: "password: TCP MD5 keys are at most 80 bytes, got 81"},
		{name: "multihop on iBGP", mod: func(p *Peer) { p.EBGPMultihopTTL = 3 }, wantErr: "ebgpMultiHop: applies only to eBGP"},
		{name: "multihop ttl 1", mod: func(p *Peer) { p.ASN = 64500; p.EBGPMultihopTTL = 1 }, wantErr: "ebgpMultiHop: must be 2-255"},
		{name: "source family", mod: func(p *Peer) { p.SourceAddress = netip.MustParseAddr("2001:db8::11") }, wantErr: "sourceAddress: 2001:db8::11 must be a non-zero address of the same family"},
		{name: "restart too long", mod: func(p *Peer) { p.GracefulRestart = true; p.RestartTime = 4096 * time.Second }, wantErr: "gracefulRestart.restartTime"},
		{name: "restart time ignored when off", mod: func(p *Peer) { p.RestartTime = 9999 * time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			tt.mod(&p)
			checkErr(t, p.normalize(testConfig).validate(), tt.wantErr)
		})
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	p := Peer{Name: "tor", Address: netip.MustParseAddr("192.0.2.1"), ASN: 1, Password: "hunter2"}
	for _, s := range []string{fmt.Sprintf("%v", p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), fmt.Sprint(p.Password)} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("password printed: %s", s)
		}
	}
	b, _ := p.Password.MarshalJSON()
	if strings.Contains(string(b), "hunter2") {
		t.Fatalf("password marshalled: %s", b)
	}
}

func TestRouteCompile(t *testing.T) {
	cfg := testConfig
	cfg.NextHopIPv4 = netip.MustParseAddr("192.0.2.11")
	lp := uint32(200)
	tests := []struct {
		name    string
		r       Route
		wantNH  string
		wantErr string
	}{
		{name: "v4 takes configured next hop", r: Route{Prefix: netip.MustParsePrefix("198.51.100.7/32")}, wantNH: "192.0.2.11"},
		{name: "v6 without next hop uses session address", r: Route{Prefix: netip.MustParsePrefix("2001:db8::7/128")}, wantNH: ""},
		{name: "explicit next hop wins", r: Route{Prefix: netip.MustParsePrefix("198.51.100.7/32"), NextHop: netip.MustParseAddr("192.0.2.12")}, wantNH: "192.0.2.12"},
		{name: "attributes", r: Route{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Communities: []string{"no-export"}, LocalPreference: &lp}, wantNH: "192.0.2.11"},
		{name: "not a host route", r: Route{Prefix: netip.MustParsePrefix("198.51.100.0/24")}, wantErr: "route 198.51.100.0/24: prefix: a VIP is advertised as a host route (/32 or /128), got /24"},
		{name: "invalid prefix", r: Route{}, wantErr: "route (invalid): prefix"},
		{name: "v4-mapped", r: Route{Prefix: netip.MustParsePrefix("::ffff:198.51.100.7/128")}, wantErr: "prefix: must be an IPv4 /32 or IPv6 /128"},
		{name: "loopback", r: Route{Prefix: netip.MustParsePrefix("127.0.0.1/32")}, wantErr: "cannot be advertised"},
		{name: "next hop family", r: Route{Prefix: netip.MustParsePrefix("2001:db8::7/128"), NextHop: netip.MustParseAddr("192.0.2.11")}, wantErr: "nextHop: 192.0.2.11 must be a non-zero address of the prefix's family"},
		{name: "bad community", r: Route{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Communities: []string{"x"}}, wantErr: `route 198.51.100.7/32: communities[0]: "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.compile(cfg)
			checkErr(t, err, tt.wantErr)
			if err == nil && addrString(got.nextHop) != tt.wantNH {
				t.Fatalf("next hop %q, want %q", addrString(got.nextHop), tt.wantNH)
			}
		})
	}
}

func TestRouterIDForIsAValidRouterID(t *testing.T) {
	id := desired.RouterIDFor("node-a", []netip.Addr{netip.MustParseAddr("2001:db8::11")})
	if err := (Config{RouterID: id, LocalASN: 1}).Validate(); err != nil {
		t.Fatal(err)
	}
}
