package firewall

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go4.org/netipx"

	"github.com/pvelb/pvelb/provider/pve"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestRangeToCIDRs(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name        string
		first, last netip.Addr
		want        []netip.Prefix
	}{
		{"single address", a("192.0.2.5"), a("192.0.2.5"), prefixes("192.0.2.5/32")},
		{"aligned /24", a("192.0.2.0"), a("192.0.2.255"), prefixes("192.0.2.0/24")},
		{"two addresses across a boundary", a("192.0.2.255"), a("198.51.100.0"), nil}, // filled below
		{"pool without .0 and .255", a("192.0.2.1"), a("192.0.2.254"), prefixes(
			"192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/30", "192.0.2.8/29", "192.0.2.16/28", "192.0.2.32/27",
			"192.0.2.64/26", "192.0.2.128/26", "192.0.2.192/27", "192.0.2.224/28", "192.0.2.240/29",
			"192.0.2.248/30", "192.0.2.252/31", "192.0.2.254/32")},
		{"small odd range", a("198.51.100.10"), a("198.51.100.20"), prefixes(
			"198.51.100.10/31", "198.51.100.12/30", "198.51.100.16/30", "198.51.100.20/32")},
		{"whole IPv4", a("0.0.0.0"), a("255.255.255.255"), prefixes("0.0.0.0/0")},
		{"last IPv4 address", a("255.255.255.255"), a("255.255.255.255"), prefixes("255.255.255.255/32")},
		{"top half of IPv4", a("128.0.0.0"), a("255.255.255.255"), prefixes("128.0.0.0/1")},
		{"IPv6 /112", a("2001:db8::"), a("2001:db8::ffff"), prefixes("2001:db8::/112")},
		{"IPv6 two addresses", a("2001:db8::1"), a("2001:db8::2"), prefixes("2001:db8::1/128", "2001:db8::2/128")},
		{"IPv6 across a /64 boundary", a("2001:db8:0:1:ffff:ffff:ffff:fffe"), a("2001:db8:0:2::1"),
			prefixes("2001:db8:0:1:ffff:ffff:ffff:fffe/127", "2001:db8:0:2::/127")},
		{"whole IPv6", a("::"), a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), prefixes("::/0")},
		{"last IPv6 address", a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
			prefixes("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")},
		{"IPv4-mapped treated as IPv4", a("::ffff:192.0.2.0"), a("::ffff:192.0.2.3"), prefixes("192.0.2.0/30")},
		{"first after last", a("192.0.2.9"), a("192.0.2.1"), nil},
		{"mixed families", a("192.0.2.1"), a("2001:db8::1"), nil},
		{"invalid", netip.Addr{}, a("192.0.2.1"), nil},
		{"zone", a("fe80::1%eth0"), a("fe80::2%eth0"), nil},
	}
	tests[2].want = prefixes("192.0.2.255/32", "192.0.3.0/24", "192.0.4.0/22", "192.0.8.0/21", "192.0.16.0/20",
		"192.0.32.0/19", "192.0.64.0/18", "192.0.128.0/17", "192.1.0.0/16", "192.2.0.0/15", "192.4.0.0/14",
		"192.8.0.0/13", "192.16.0.0/12", "192.32.0.0/11", "192.64.0.0/10", "192.128.0.0/9", "193.0.0.0/8",
		"194.0.0.0/7", "196.0.0.0/7", "198.0.0.0/11", "198.32.0.0/12", "198.48.0.0/15", "198.50.0.0/16",
		"198.51.0.0/18", "198.51.64.0/19", "198.51.96.0/22", "198.51.100.0/32")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RangeToCIDRs(tt.first, tt.last)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("RangeToCIDRs(%v, %v)\n got %v\nwant %v", tt.first, tt.last, got, tt.want)
			}
			if tt.want != nil {
				checkExactCover(t, tt.first.Unmap(), tt.last.Unmap(), got)
			}
		})
	}
}

// checkExactCover asserts that ps are in order, contiguous, masked, start at
// first, end at last, and minimal: no two neighbours could merge into one prefix.
func checkExactCover(t *testing.T, first, last netip.Addr, ps []netip.Prefix) {
	t.Helper()
	next := first
	for i, p := range ps {
		if p.Masked() != p {
			t.Fatalf("%v is not masked", p)
		}
		if p.Addr() != next {
			t.Fatalf("prefix %d %v does not start at %v: gap or overlap", i, p, next)
		}
		next = netipx.PrefixLastIP(p).Next()
		if i > 0 && ps[i-1].Bits() == p.Bits() && p.Bits() > 0 {
			parent := netip.PrefixFrom(ps[i-1].Addr(), p.Bits()-1).Masked()
			if parent.Addr() == ps[i-1].Addr() && netipx.PrefixLastIP(parent) == netipx.PrefixLastIP(p) {
				t.Fatalf("%v and %v could be one prefix %v: not minimal", ps[i-1], p, parent)
			}
		}
	}
	if got := netipx.PrefixLastIP(ps[len(ps)-1]); got != last {
		t.Fatalf("cover ends at %v, want %v", got, last)
	}
}

func TestRangeToCIDRsRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var first, last netip.Addr
		if r.IntN(2) == 0 {
			x, y := r.Uint32(), r.Uint32()
			if x > y {
				x, y = y, x
			}
			first = netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
			last = netip.AddrFrom4([4]byte{byte(y >> 24), byte(y >> 16), byte(y >> 8), byte(y)})
		} else {
			var b1, b2 [16]byte
			for i := range b1 {
				b1[i], b2[i] = byte(r.UintN(256)), byte(r.UintN(256))
			}
			first, last = netip.AddrFrom16(b1), netip.AddrFrom16(b2)
			if first.Compare(last) > 0 {
				first, last = last, first
			}
		}
		ps := RangeToCIDRs(first, last)
		if len(ps) == 0 || len(ps) > 2*first.BitLen() {
			t.Fatalf("RangeToCIDRs(%v, %v) = %d prefixes", first, last, len(ps))
		}
		checkExactCover(t, first, last, ps)
	}
}

func TestProxmoxPrefixesSplitsSlashZero(t *testing.T) {
	got := proxmoxPrefixes(prefixes("0.0.0.0/0", "192.0.2.0/24", "::/0"))
	want := prefixes("0.0.0.0/1", "128.0.0.0/1", "192.0.2.0/24", "::/1", "8000::/1")
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// FormatCIDR must produce exactly what the client (and Proxmox) store, or a
// delete would silently miss.
func TestFormatCIDRMatchesProxmoxNormalisation(t *testing.T) {
	for _, s := range []string{
		"192.0.2.5/32", "192.0.2.5/24", "198.51.100.0/31", "2001:db8::1/128", "2001:DB8:0:0::5/64",
		"2001:db8:0:0:0:0:0:1/127", "::ffff:192.0.2.7/128", "203.0.113.128/25", "128.0.0.0/1",
	} {
		p, ok := ParseCIDR(s)
		if !ok {
			t.Fatalf("ParseCIDR(%q) failed", s)
		}
		want, err := pve.NormalizeCIDR(s)
		if err != nil {
			t.Fatalf("pve.NormalizeCIDR(%q): %v", s, err)
		}
		if got := FormatCIDR(p); got != want {
			t.Errorf("FormatCIDR(%q) = %q, pve.NormalizeCIDR = %q", s, got, want)
		}
	}
}

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"192.0.2.5", "192.0.2.5/32", true},
		{" 192.0.2.5/24 ", "192.0.2.0/24", true},
		{"2001:DB8::1", "2001:db8::1/128", true},
		{"::ffff:192.0.2.1", "192.0.2.1/32", true},
		{"myalias", "", false},
		{"dc/myalias", "", false},
		{"fe80::1%eth0", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		p, ok := ParseCIDR(tt.in)
		if ok != tt.ok || (ok && p.String() != tt.want) {
			t.Errorf("ParseCIDR(%q) = %v, %v; want %s, %v", tt.in, p, ok, tt.want, tt.ok)
		}
	}
}

func TestComments(t *testing.T) {
	if got := ServicesComment([]string{"ns/b", "ns/a", "ns/b"}); got != "pvelb: ns/a,ns/b" {
		t.Fatalf("ServicesComment = %q", got)
	}
	var many []string
	for i := range 30 {
		many = append(many, "some-namespace/service-"+strings.Repeat("x", i))
	}
	long := ServicesComment(many)
	if long != "pvelb: 30 services" || len(long) > maxCommentLen {
		t.Fatalf("long ServicesComment = %q", long)
	}
	tests := []struct {
		comment string
		ours    bool
		want    Marker
	}{
		{"pvelb: default/web", true, Marker{Services: []string{"default/web"}, ServiceCount: 1}},
		{"  pvelb: a/x,b/y ", true, Marker{Services: []string{"a/x", "b/y"}, ServiceCount: 2}},
		{"pvelb: 30 services", true, Marker{ServiceCount: 30}},
		{SeedComment, true, Marker{Seed: true}},
		{"pvelb: pool blue,green", true, Marker{Pools: []string{"blue", "green"}}},
		{"pvelb: 7 pools", true, Marker{}},
		{"pvelb: something newer", true, Marker{Services: []string{"something newer"}, ServiceCount: 1}},
		{"pvelb:", true, Marker{}},
		{"my VIP pvelb: x", false, Marker{}},
		{"PVELB: x", false, Marker{}},
		{"", false, Marker{}},
	}
	for _, tt := range tests {
		m, ok := ParseComment(tt.comment)
		if ok != tt.ours || ok != IsOurs(tt.comment) {
			t.Errorf("ParseComment(%q) ours = %v, IsOurs = %v, want %v", tt.comment, ok, IsOurs(tt.comment), tt.ours)
		}
		if m.Seed != tt.want.Seed || m.ServiceCount != tt.want.ServiceCount ||
			!slices.Equal(m.Services, tt.want.Services) || !slices.Equal(m.Pools, tt.want.Pools) {
			t.Errorf("ParseComment(%q) = %+v, want %+v", tt.comment, m, tt.want)
		}
	}
	for _, c := range []string{ServicesComment([]string{"default/web"}), PoolsComment([]string{"p"}), ClusterSetComment, VMSetComment} {
		if IsSeed(c) || !IsOurs(c) {
			t.Errorf("%q: want ours and not a seed", c)
		}
	}
}
