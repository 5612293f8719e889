package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"go4.org/netipx"

	"github.com/pvelb/pvelb/provider/pve"
)

// FuzzParseCIDR feeds IPSet rows' cidr values (anything an admin or another
// tool put in the set) to ParseCIDR. Accepted values must format to a form
// that parses back to the same prefix, and must agree byte for byte with the
// provider's NormalizeCIDR wherever that accepts the value too: plans compare
// FormatCIDR strings with what Proxmox stores, and deletes go out through
// NormalizeCIDR, so a disagreement would make a delete miss its row.
func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{
		"192.0.2.5", " 192.0.2.5 ", "192.0.2.5/32", "192.0.2.5/24", "2001:db8::1", "2001:DB8::1/64",
		"::ffff:192.0.2.7", "::ffff:192.0.2.7/120", "::ffff:0:0/80", "0.0.0.0/0", "::/0",
		"fe80::1%eth0", "vips", "+dc/vips", "192.0.2.1/24/1", "", "2001:db8:0000::10/124",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := ParseCIDR(s)
		if !ok {
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" {
			t.Fatalf("ParseCIDR(%q) = %v: not a masked plain prefix", s, p)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			t.Fatalf("ParseCIDR(%q) = %v: IPv4-mapped prefix not unmapped", s, p)
		}
		out := FormatCIDR(p)
		back, ok := ParseCIDR(out)
		if !ok || back != p || FormatCIDR(back) != out {
			t.Fatalf("ParseCIDR(%q) = %v, formats as %q, which parses to %v, %v", s, p, out, back, ok)
		}
		in := strings.TrimSpace(s)
		addr, _, _ := strings.Cut(in, "/")
		if written := netip.MustParseAddr(addr).Unmap(); !p.Contains(written) && !p.Contains(netip.MustParseAddr(addr)) {
			t.Fatalf("ParseCIDR(%q) = %v does not hold the address written", s, p)
		}
		if n, err := pve.NormalizeCIDR(s); err == nil && n != out {
			t.Fatalf("cidr %q: FormatCIDR(ParseCIDR) = %q but pve.NormalizeCIDR = %q", s, out, n)
		}
	})
}

// FuzzRangeToCIDRs checks the conversion of an admitted range (pool ranges,
// pvelb.io/admitted items) into IPSet prefixes: the prefixes must tile
// exactly first..last in order, each as large as it can be, so that the set
// admits neither less nor more than the range.
func FuzzRangeToCIDRs(f *testing.F) {
	for _, c := range [][2]string{
		{"192.0.2.10", "192.0.2.20"}, {"192.0.2.0", "192.0.2.255"}, {"0.0.0.0", "255.255.255.255"},
		{"2001:db8::ffff", "2001:db8::1:0"}, {"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"::ffff:192.0.2.1", "192.0.2.9"}, {"192.0.2.9", "192.0.2.1"}, {"192.0.2.1", "2001:db8::1"},
		{"255.255.255.255", "255.255.255.255"},
	} {
		a, b := netip.MustParseAddr(c[0]), netip.MustParseAddr(c[1])
		f.Add(a.AsSlice(), b.AsSlice())
	}
	f.Fuzz(func(t *testing.T, fb, lb []byte) {
		first, ok1 := netip.AddrFromSlice(fb)
		last, ok2 := netip.AddrFromSlice(lb)
		if !ok1 || !ok2 {
			return
		}
		ps := RangeToCIDRs(first, last)
		first, last = first.Unmap(), last.Unmap()
		if first.Is4() != last.Is4() || first.Compare(last) > 0 {
			if ps != nil {
				t.Fatalf("RangeToCIDRs(%v, %v) = %v for an empty range", first, last, ps)
			}
			return
		}
		if len(ps) == 0 || len(ps) > 2*first.BitLen() {
			t.Fatalf("RangeToCIDRs(%v, %v) = %v", first, last, ps)
		}
		next := first
		for i, p := range ps {
			if p.Masked() != p || p.Addr() != next {
				t.Fatalf("RangeToCIDRs(%v, %v) = %v: prefix %d does not start at %v", first, last, ps, i, next)
			}
			// Maximal: the prefix one bit shorter either starts earlier or
			// reaches past last.
			if p.Bits() > 0 {
				wider := netip.PrefixFrom(p.Addr(), p.Bits()-1)
				if wider.Masked().Addr() == p.Addr() && netipx.PrefixLastIP(wider).Compare(last) <= 0 {
					t.Fatalf("RangeToCIDRs(%v, %v) = %v: %v could be %v", first, last, ps, p, wider)
				}
			}
			end := netipx.PrefixLastIP(p)
			if i == len(ps)-1 {
				if end != last {
					t.Fatalf("RangeToCIDRs(%v, %v) = %v ends at %v", first, last, ps, end)
				}
				break
			}
			next = end.Next()
		}
		for _, p := range proxmoxPrefixes(ps) {
			if p.Bits() == 0 {
				t.Fatalf("proxmoxPrefixes(%v) keeps %v", ps, p)
			}
		}
	})
}
