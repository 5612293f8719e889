package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func peerAddrs(ps []Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Address.String())
	}
	return out
}

func TestDiffPeers(t *testing.T) {
	mk := func(addr string, mod ...func(*Peer)) Peer {
		p := Peer{Name: "p-" + addr, Address: netip.MustParseAddr(addr), ASN: 64500}
		for _, m := range mod {
			m(&p)
		}
		return p
	}
	running := func(ps ...Peer) map[netip.Addr]Peer {
		m := map[netip.Addr]Peer{}
		for _, p := range ps {
			m[p.Address] = p.normalize(testConfig)
		}
		return m
	}
	tests := []struct {
		name                      string
		current                   map[netip.Addr]Peer
		desired                   []Peer
		add, update, remove, keep []string
		wantErr                   string
	}{
		{name: "empty", current: running()},
		{name: "add", current: running(), desired: []Peer{mk("192.0.2.2"), mk("192.0.2.1")},
			add: []string{"192.0.2.1", "192.0.2.2"}, keep: []string{"192.0.2.1", "192.0.2.2"}},
		{name: "unchanged after defaults", current: running(mk("192.0.2.1")),
			desired: []Peer{mk("192.0.2.1", func(p *Peer) { p.HoldTime = 90 * time.Second; p.Port = 179 })}, keep: []string{"192.0.2.1"}},
		{name: "password change replaces", current: running(mk("192.0.2.1")),
			desired: []Peer{mk("192.0.2.1", func(p *Peer) { p.Password = "new" })}, update: []string{"192.0.2.1"}, keep: []string{"192.0.2.1"}},
		{name: "remove", current: running(mk("192.0.2.1"), mk("192.0.2.2")), desired: []Peer{mk("192.0.2.2")},
			remove: []string{"192.0.2.1"}, keep: []string{"192.0.2.2"}},
		{name: "invalid edit keeps running session", current: running(mk("192.0.2.1")),
			desired: []Peer{mk("192.0.2.1", func(p *Peer) { p.HoldTime = time.Second })}, keep: []string{"192.0.2.1"}, wantErr: "peer p-192.0.2.1 (192.0.2.1): holdTime"},
		{name: "invalid new peer skipped, others applied", current: running(),
			desired: []Peer{mk("192.0.2.1", func(p *Peer) { p.ASN = 0 }), mk("192.0.2.2")}, add: []string{"192.0.2.2"}, keep: []string{"192.0.2.2"}, wantErr: "peerASN"},
		{name: "duplicate address", current: running(),
			desired: []Peer{mk("192.0.2.1"), mk("192.0.2.1", func(p *Peer) { p.Name = "other" })}, add: []string{"192.0.2.1"}, keep: []string{"192.0.2.1"},
			wantErr: "peer other (192.0.2.1): address already used by peer p-192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := diffPeers(testConfig, tt.current, tt.desired)
			checkErr(t, err, tt.wantErr)
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"add", peerAddrs(ch.add), tt.add}, {"update", peerAddrs(ch.update), tt.update}, {"remove", peerAddrs(ch.remove), tt.remove}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
			var keep []string
			for a := range ch.keep {
				keep = append(keep, a.String())
			}
			slices.Sort(keep)
			if !slices.Equal(keep, tt.keep) {
				t.Errorf("keep = %v, want %v", keep, tt.keep)
			}
		})
	}
}

func TestDiffRoutes(t *testing.T) {
	lp := func(v uint32) *uint32 { return &v }
	vip := func(s string, comms ...string) Route {
		return Route{Prefix: netip.MustParsePrefix(s), Communities: comms}
	}
	compiled := func(rs ...Route) map[netip.Prefix]route {
		m := map[netip.Prefix]route{}
		for _, r := range rs {
			c, err := r.compile(testConfig)
			if err != nil {
				t.Fatal(err)
			}
			m[c.prefix] = c
		}
		return m
	}
	tests := []struct {
		name        string
		current     map[netip.Prefix]route
		desired     []Route
		put, remove []string
		keep        int
		wantErr     string
	}{
		{name: "add v4 and v6", current: compiled(), desired: []Route{vip("198.51.100.1/32"), vip("2001:db8::1/128")},
			put: []string{"198.51.100.1/32", "2001:db8::1/128"}, keep: 2},
		{name: "no change", current: compiled(vip("198.51.100.1/32", "no-export")), desired: []Route{vip("198.51.100.1/32", "65535:65281")}, keep: 1},
		{name: "community change", current: compiled(vip("198.51.100.1/32", "1:1")), desired: []Route{vip("198.51.100.1/32", "1:2")}, put: []string{"198.51.100.1/32"}, keep: 1},
		{name: "local pref change", current: compiled(vip("198.51.100.1/32")),
			desired: []Route{{Prefix: netip.MustParsePrefix("198.51.100.1/32"), LocalPreference: lp(50)}}, put: []string{"198.51.100.1/32"}, keep: 1},
		{name: "withdraw", current: compiled(vip("198.51.100.1/32"), vip("198.51.100.2/32")), desired: []Route{vip("198.51.100.2/32")},
			remove: []string{"198.51.100.1/32"}, keep: 1},
		{name: "bad edit keeps advertised route", current: compiled(vip("198.51.100.1/32")), desired: []Route{vip("198.51.100.1/32", "bogus")},
			keep: 1, wantErr: "communities[0]"},
		{name: "conflicting duplicates", current: compiled(), desired: []Route{vip("198.51.100.1/32", "1:1"), vip("198.51.100.1/32", "1:2")},
			put: []string{"198.51.100.1/32"}, keep: 1, wantErr: "listed twice with different attributes"},
		{name: "identical duplicates are fine", current: compiled(), desired: []Route{vip("198.51.100.1/32"), vip("198.51.100.1/32")},
			put: []string{"198.51.100.1/32"}, keep: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := diffRoutes(testConfig, tt.current, tt.desired)
			checkErr(t, err, tt.wantErr)
			var put, remove []string
			for _, r := range ch.put {
				put = append(put, r.prefix.String())
			}
			for _, p := range ch.remove {
				remove = append(remove, p.String())
			}
			if !slices.Equal(put, tt.put) || !slices.Equal(remove, tt.remove) || len(ch.keep) != tt.keep {
				t.Fatalf("put %v remove %v keep %d; want put %v remove %v keep %d", put, remove, len(ch.keep), tt.put, tt.remove, tt.keep)
			}
		})
	}
}

func TestAPIPath(t *testing.T) {
	lp := uint32(300)
	r, err := Route{Prefix: netip.MustParsePrefix("2001:db8::7/128"), NextHop: netip.MustParseAddr("2001:db8::11"),
		Communities: []string{"65000:1", "1:2:3"}, LocalPreference: &lp}.compile(testConfig)
	if err != nil {
		t.Fatal(err)
	}
	p, err := apiPath(r)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, a := range p.Pattrs {
		types = append(types, a.TypeUrl[strings.LastIndex(a.TypeUrl, ".")+1:])
	}
	want := []string{"OriginAttribute", "MpReachNLRIAttribute", "CommunitiesAttribute", "LargeCommunitiesAttribute", "LocalPrefAttribute"}
	if !slices.Equal(types, want) {
		t.Fatalf("attributes %v, want %v", types, want)
	}
	if p.Family.Afi != familyIPv6.Afi {
		t.Fatalf("family %v", p.Family)
	}
}
