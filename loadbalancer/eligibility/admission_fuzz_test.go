package eligibility

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go4.org/netipx"

	"github.com/pvelb/pvelb/names"
)

// FuzzParseAdmission feeds pvelb.io/admitted values to ParseAdmission. The
// annotation lives on Node objects anyone with Node write access can edit,
// so a hostile value must not panic; an accepted one must be canonical on
// output (String parses back to an equal Admission, and String is a fixed
// point, which is what lets pvelb-ccm skip unchanged writes), must hold
// well-formed merged ranges, and must admit every address written in it.
func FuzzParseAdmission(f *testing.F) {
	for _, s := range []string{
		"", "unfiltered", " unfiltered ", "Unfiltered",
		"192.0.2.10,192.0.2.200-192.0.2.215,2001:db8::200-2001:db8::2ff",
		"192.0.2.10, 192.0.2.200-192.0.2.215,2001:db8::200-2001:db8::2ff",
		"192.0.2.1,192.0.2.2,192.0.2.3", "192.0.2.5-192.0.2.9,192.0.2.1-192.0.2.6",
		"255.255.255.255,0.0.0.0", "::ffff:192.0.2.1-192.0.2.4",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,::", "2001:db8::1,192.0.2.1",
		"bogus", "192.0.2.1,", "192.0.2.10-192.0.2.1", "192.0.2.1-2001:db8::1",
		"192.0.2.0/24", "fe80::1%eth0", "192.0.2.1-", "*", "unfiltered,192.0.2.1",
		"192.0.2.1-192.0.2.2-192.0.2.3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAdmission(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), names.AnnotationAdmitted+" ") {
				t.Fatalf("ParseAdmission(%q) error %q does not name the annotation", s, err)
			}
			return
		}
		out := a.String()
		b, err := ParseAdmission(out)
		if err != nil {
			t.Fatalf("ParseAdmission(%q).String() = %q does not parse: %v", s, out, err)
		}
		if b.unfiltered != a.unfiltered || !slices.Equal(ranges(b), ranges(a)) {
			t.Fatalf("ParseAdmission(%q) = %v, re-parsed as %v", s, a, b)
		}
		if b.String() != out {
			t.Fatalf("ParseAdmission(%q): String %q then %q", s, out, b.String())
		}
		if a.unfiltered {
			if len(ranges(a)) != 0 || strings.TrimSpace(s) != Unfiltered {
				t.Fatalf("ParseAdmission(%q) = unfiltered", s)
			}
			return
		}
		rs := ranges(a)
		for i, r := range rs {
			first, last := r.From(), r.To()
			switch {
			case !first.IsValid() || !last.IsValid() || first.Zone() != "" || last.Zone() != "":
				t.Fatalf("ParseAdmission(%q): bad range %v-%v", s, first, last)
			case first.Is4In6() || last.Is4In6():
				t.Fatalf("ParseAdmission(%q): IPv4-mapped range %v-%v", s, first, last)
			case first.Is4() != last.Is4() || first.Compare(last) > 0:
				t.Fatalf("ParseAdmission(%q): range %v-%v is not first <= last of one family", s, first, last)
			case i > 0 && rs[i-1].From().Is4() == first.Is4() && (first.Compare(rs[i-1].To()) <= 0 || rs[i-1].To().Next() == first):
				t.Fatalf("ParseAdmission(%q): ranges %v and %v are not merged", s, rs[i-1], r)
			case i > 0 && rs[i-1].From().Compare(first) >= 0:
				t.Fatalf("ParseAdmission(%q): ranges out of order", s)
			}
		}
		// Each item written is admitted end to end (its mapped form too,
		// since Admits unmaps), and nothing just outside all ranges is.
		for item := range strings.SplitSeq(strings.TrimSpace(s), ",") {
			if strings.TrimSpace(item) == "" {
				continue
			}
			first, last, isRange := strings.Cut(item, "-")
			for _, x := range []string{first, last} {
				if x == last && !isRange {
					continue
				}
				ip := netip.MustParseAddr(strings.TrimSpace(x))
				if !a.Admits(ip) || !a.Admits(netip.AddrFrom16(ip.Unmap().As16())) && ip.Unmap().Is4() {
					t.Fatalf("ParseAdmission(%q) does not admit %v", s, ip)
				}
			}
		}
		for _, r := range ranges(a) {
			if p := r.From().Prev(); p.IsValid() && p.Is4() == r.From().Is4() && a.Admits(p) {
				t.Fatalf("ParseAdmission(%q) admits %v, just before %v", s, p, r.From())
			}
			if n := r.To().Next(); n.IsValid() && a.Admits(n) {
				t.Fatalf("ParseAdmission(%q) admits %v, just after %v", s, n, r.To())
			}
		}
	})
}

// ranges are the admission's sorted, merged ranges.
func ranges(a Admission) []netipx.IPRange {
	if a.set == nil {
		return nil
	}
	return a.set.Ranges()
}
