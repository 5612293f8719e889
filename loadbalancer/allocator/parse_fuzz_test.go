package allocator

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go4.org/netipx"

	"github.com/pvelb/pvelb/names"
)

// FuzzParseRange feeds IPPool address entries (what a user writes in
// spec.addresses) to ParseRange. Whatever it accepts must be a well-formed
// range of the address(es) written, and must come back unchanged when
// written out again; whatever it refuses must say which entry.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		"192.0.2.0/24", "192.0.2.7/32", "0.0.0.0/0", "::/0",
		"2001:db8::/120", "2001:db8::/64", "2001:db8::1/128",
		"192.0.2.10-192.0.2.20", " 192.0.2.10 - 192.0.2.10 ",
		"2001:db8::ffff-2001:db8::1:0", "255.255.255.255-255.255.255.255",
		"192.0.2.1/24", "192.0.2.0/33", "192.0.2.20-192.0.2.10",
		"192.0.2.1-2001:db8::1", "192.0.2.1", "::ffff:192.0.2.1-::ffff:192.0.2.9",
		"::ffff:192.0.2.0/120", "fe80::1%eth0-fe80::2%eth0", "fe80::1%eth-0-fe80::2",
		"a-b", "", "-", "/", "192.0.2.0/024", "192.0.2.1--192.0.2.2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			// Errors reach the IPPool's status: they must quote the entry
			// so the user can find it among the pool's addresses.
			if !strings.Contains(err.Error(), "address ") {
				t.Fatalf("ParseRange(%q) error %q does not name the entry", s, err)
			}
			return
		}
		checkRange(t, s, r)

		// What was written must be what was parsed: the range's ends are
		// the addresses written (for first-last) or the prefix's network
		// and broadcast (for a CIDR).
		in := strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(in); err == nil {
			if r.First != p.Addr() || !p.Contains(r.Last) || netipx.PrefixLastIP(p) != r.Last {
				t.Fatalf("ParseRange(%q) = %v, not the prefix %v", s, r, p)
			}
		} else {
			a, b, _ := strings.Cut(in, "-")
			if netip.MustParseAddr(strings.TrimSpace(a)) != r.First || netip.MustParseAddr(strings.TrimSpace(b)) != r.Last {
				t.Fatalf("ParseRange(%q) = %v, not the addresses written", s, r)
			}
		}

		// Written back out as first-last, the range parses to itself.
		// (Range.String prints a one-address range as a bare address, which
		// ParseRange does not take, so it is not used here.)
		back, err := ParseRange(r.First.String() + "-" + r.Last.String())
		if err != nil || back != r {
			t.Fatalf("ParseRange(%q) = %v; its first-last form parses to %v, %v", s, r, back, err)
		}
		if r.First != r.Last {
			if back, err := ParseRange(r.String()); err != nil || back != r {
				t.Fatalf("ParseRange(%q) = %v; String %q parses to %v, %v", s, r, r.String(), back, err)
			}
		}
	})
}

// checkRange asserts the shape every accepted range must have: valid ends of
// one family, no zone, no IPv4-mapped form, first <= last.
func checkRange(t *testing.T, in string, r Range) {
	t.Helper()
	switch {
	case !r.First.IsValid() || !r.Last.IsValid():
		t.Fatalf("%q: range %v has an invalid end", in, r)
	case r.First.Is4() != r.Last.Is4():
		t.Fatalf("%q: range %v mixes families", in, r)
	case r.First.Zone() != "" || r.Last.Zone() != "" || r.First.Is4In6() || r.Last.Is4In6():
		t.Fatalf("%q: range %v has a zoned or IPv4-mapped end", in, r)
	case r.First.Compare(r.Last) > 0:
		t.Fatalf("%q: range %v ends before it starts", in, r)
	case !r.Contains(r.First) || !r.Contains(r.Last):
		t.Fatalf("%q: range %v does not contain its ends", in, r)
	}
}

// FuzzParseRanges fuzzes a whole spec.addresses list (entries separated by
// newlines in the fuzz input). Accepted lists must merge to sorted, disjoint,
// non-adjacent ranges covering exactly the entries' addresses; errors must
// name the index of the offending entry.
func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{
		"192.0.2.0/24",
		"192.0.2.0/25\n192.0.2.128/25",
		"192.0.2.10-192.0.2.20\n192.0.2.15-192.0.2.30\n2001:db8::/120",
		"192.0.2.0/24\n192.0.2.0/24",
		"192.0.2.255-192.0.2.255\n192.0.3.0-192.0.3.0",
		"255.255.255.255-255.255.255.255\n::-::",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n0.0.0.0/0",
		"2001:db8::/64\n192.0.2.0/24\nbad",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		entries := strings.Split(s, "\n")
		if s == "" {
			entries = nil
		}
		rs, err := ParseRanges(entries)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "addresses") {
				t.Fatalf("ParseRanges(%q) error %q does not name the field", entries, err)
			}
			return
		}
		if len(rs) == 0 {
			t.Fatalf("ParseRanges(%q) accepted with no ranges", entries)
		}
		for i, r := range rs {
			checkRange(t, s, r)
			if i == 0 {
				continue
			}
			prev := rs[i-1]
			if prev.First.Is4() == r.First.Is4() {
				if next := prev.Last.Next(); prev.Last.Compare(r.First) >= 0 || next == r.First {
					t.Fatalf("ParseRanges(%q) = %v: %v and %v overlap or touch", entries, rs, prev, r)
				}
			} else if !prev.First.Is4() {
				t.Fatalf("ParseRanges(%q) = %v: IPv6 before IPv4", entries, rs)
			}
		}
		// Every entry's ends are covered, and every merged range's ends come
		// from some entry: merging neither loses nor invents addresses at
		// the boundaries.
		var ends []netip.Addr
		for _, e := range entries {
			r, err := ParseRange(e)
			if err != nil {
				t.Fatalf("ParseRanges accepted %q but ParseRange(%q) = %v", entries, e, err)
			}
			ends = append(ends, r.First, r.Last)
			for _, a := range []netip.Addr{r.First, r.Last} {
				if !slices.ContainsFunc(rs, func(m Range) bool { return m.Contains(a) }) {
					t.Fatalf("ParseRanges(%q) = %v loses %v", entries, rs, a)
				}
			}
		}
		for _, m := range rs {
			if !slices.Contains(ends, m.First) || !slices.Contains(ends, m.Last) {
				t.Fatalf("ParseRanges(%q) = %v: %v has an end no entry wrote", entries, rs, m)
			}
		}
		// Parsing the merged result again is a fixed point.
		var again []string
		for _, m := range rs {
			again = append(again, m.First.String()+"-"+m.Last.String())
		}
		rs2, err := ParseRanges(again)
		if err != nil || !slices.Equal(rs, rs2) {
			t.Fatalf("ParseRanges(%q) = %v; re-parsed %v, %v", entries, rs, rs2, err)
		}
	})
}

// FuzzParseRequest fuzzes the pvelb.io/ips annotation and
// spec.loadBalancerIP together. Accepted requests are distinct plain
// addresses that parse back to themselves and include loadBalancerIP; refused
// ones are *Error values naming the field at fault.
func FuzzParseRequest(f *testing.F) {
	for _, c := range [][3]string{
		{"", "", "0"},
		{"192.0.2.1, 2001:db8::1", "", "1"},
		{"192.0.2.1,192.0.2.1", "", "1"},
		{"", "192.0.2.9", "0"},
		{"192.0.2.9,2001:db8::9", "192.0.2.9", "1"},
		{"192.0.2.1", "192.0.2.9", "1"},
		{"192.0.2.1,nope", "", "1"},
		{" , ", "", "1"},
		{"", "192.0.2.300", "0"},
		{"::ffff:192.0.2.1", "", "1"},
		{"fe80::1%eth0", "fe80::1%eth0", "1"},
		{"2001:DB8::1", " 2001:db8::1 ", "1"},
		{"", " ", "1"},
	} {
		f.Add(c[0], c[1], c[2] == "1")
	}
	f.Fuzz(func(t *testing.T, ann, lbIP string, hasAnn bool) {
		annotations := map[string]string{}
		if hasAnn {
			annotations[names.AnnotationIPs] = ann
		}
		ips, err := ParseRequest(annotations, lbIP)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseRequest(%q, %q) error %T is not *Error", ann, lbIP, err)
			}
			if !strings.Contains(e.Msg, names.AnnotationIPs) && !strings.Contains(e.Msg, "spec.loadBalancerIP") {
				t.Fatalf("ParseRequest(%q, %q) error %q names neither field", ann, lbIP, e.Msg)
			}
			return
		}
		if !hasAnn && strings.TrimSpace(lbIP) == "" && ips != nil {
			t.Fatalf("ParseRequest(nothing) = %v", ips)
		}
		for i, a := range ips {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("ParseRequest(%q, %q) = %v: %v is not a plain address", ann, lbIP, ips, a)
			}
			if slices.Contains(ips[:i], a) {
				t.Fatalf("ParseRequest(%q, %q) = %v: %v twice", ann, lbIP, ips, a)
			}
		}
		if l := strings.TrimSpace(lbIP); l != "" && !slices.Contains(ips, netip.MustParseAddr(l)) {
			t.Fatalf("ParseRequest(%q, %q) = %v, without loadBalancerIP", ann, lbIP, ips)
		}
		// The canonical annotation value parses to the same request.
		var parts []string
		for _, a := range ips {
			parts = append(parts, a.String())
		}
		if len(ips) > 0 {
			again, err := ParseRequest(map[string]string{names.AnnotationIPs: strings.Join(parts, ",")}, "")
			if err != nil || !slices.Equal(again, ips) {
				t.Fatalf("ParseRequest(%q, %q) = %v; re-parsed %v, %v", ann, lbIP, ips, again, err)
			}
		}
	})
}
