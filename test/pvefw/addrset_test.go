package pvefw

import (
	"net/netip"
	"testing"
)

func TestSetArithmetic(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name  string
		build func() Set
		want  string
	}{
		{"empty", func() Set { return Set{} }, ""},
		{"host", func() Set { return Set{}.with(prefixRange(p("192.0.2.11/32"))) }, "192.0.2.11"},
		{"adjacent ranges merge", func() Set {
			return Set{}.with(prefixRange(p("192.0.2.0/25"))).with(prefixRange(p("192.0.2.128/25")))
		}, "192.0.2.0/24"},
		{"overlap merges", func() Set {
			return Set{}.with(prefixRange(p("192.0.2.16/28"))).with(prefixRange(p("192.0.2.0/24"))).with(prefixRange(p("192.0.2.5/32")))
		}, "192.0.2.0/24"},
		{"disjoint stay apart, sorted", func() Set {
			return Set{}.with(prefixRange(p("192.0.2.200/32"))).with(prefixRange(p("192.0.2.11/32")))
		}, "192.0.2.11, 192.0.2.200"},
		{"hole in the middle", func() Set {
			return Set{}.with(prefixRange(p("192.0.2.0/24"))).without(prefixRange(p("192.0.2.128/32")))
		}, "192.0.2.0/25, 192.0.2.129, 192.0.2.130/31, 192.0.2.132/30, 192.0.2.136/29, 192.0.2.144/28, 192.0.2.160/27, 192.0.2.192/26"},
		{"remove all", func() Set {
			return Set{}.with(prefixRange(p("192.0.2.8/29"))).without(prefixRange(p("192.0.2.0/24")))
		}, ""},
		{"remove an edge", func() Set {
			return Set{}.with(prefixRange(p("192.0.2.0/30"))).without(prefixRange(p("192.0.2.0/32")))
		}, "192.0.2.1, 192.0.2.2/31"},
		{"IPv6 up to the last address", func() Set {
			return Set{}.with(prefixRange(p("ffff::/16"))).with(prefixRange(p("fe80::/10")))
		}, "fe80::/10, ffff::/16"},
		{"IPv6 link-local minus fe80::/10 plus one", func() Set {
			return Set{}.with(prefixRange(p("fe80::/10"))).without(prefixRange(p("fe80::/10"))).with(prefixRange(p("fe80::1/128")))
		}, "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.build()
			if got := s.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if s.Empty() != (tt.want == "") {
				t.Errorf("Empty() = %v", s.Empty())
			}
		})
	}
}

func TestSetContains(t *testing.T) {
	s := Set{}.with(prefixRange(netip.MustParsePrefix("192.0.2.0/24"))).without(prefixRange(netip.MustParsePrefix("192.0.2.200/32")))
	for a, want := range map[string]bool{
		"192.0.2.0": true, "192.0.2.199": true, "192.0.2.200": false, "192.0.2.201": true, "192.0.2.255": true,
		"192.0.3.0": false, "::ffff:192.0.2.1": true, "2001:db8::1": false,
	} {
		if got := s.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
}
