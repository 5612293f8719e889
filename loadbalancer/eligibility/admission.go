package eligibility

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/pvelb/pvelb/names"
)

// The Node annotation names.AnnotationAdmitted is written by pvelb-ccm: the addresses
// the Node's VM lets through its Proxmox IP filter as source addresses, as
// far as pvelb manages them. It is written only after the VM's ipfilter-netX
// sets were brought in line (every managed NIC's set admits what it lists),
// only when it changes, and removed from a Node whose VM pvelb cannot locate
// (no spec.providerID yet, or one naming no VM of a configured Proxmox
// cluster). A Node without it may not announce anything: its VM may drop
// the replies.
//
// The value is Unfiltered, or a comma-separated list, in address order, of
// single addresses and inclusive ranges "first-last", such as
// "192.0.2.10,192.0.2.200-192.0.2.215,2001:db8::200-2001:db8::2ff". An empty
// value admits nothing.
//
// Unfiltered is the value of names.AnnotationAdmitted when no filter applies to
// the VM: pvelb's firewall management is off (firewall.enabled: false), or
// the VM's ipfilter option is off and it has none of the managed sets.
const Unfiltered = "unfiltered"

// Admission is a parsed names.AnnotationAdmitted. The zero value admits nothing.
type Admission struct {
	unfiltered bool
	// ranges are sorted and merged: none overlap or touch.
	ranges []addrRange
}

type addrRange struct{ first, last netip.Addr }

// AdmitAll is the admission of a VM no filter applies to.
func AdmitAll() Admission { return Admission{unfiltered: true} }

// AdmitPrefixes is the admission of a VM whose filter lets exactly the given
// prefixes through (single addresses are /32 or /128 prefixes).
func AdmitPrefixes(prefixes []netip.Prefix) Admission {
	rs := make([]addrRange, 0, len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		rs = append(rs, addrRange{p.Addr(), lastOf(p)})
	}
	return Admission{ranges: merge(rs)}
}

// ParseAdmission reads a names.AnnotationAdmitted value. Any malformed part makes
// the whole value an error: a value pvelb did not write is not trusted.
func ParseAdmission(s string) (Admission, error) {
	s = strings.TrimSpace(s)
	if s == Unfiltered {
		return AdmitAll(), nil
	}
	if s == "" {
		return Admission{}, nil
	}
	var rs []addrRange
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		firstS, lastS, isRange := strings.Cut(item, "-")
		first, err := parseAddr(firstS)
		if err != nil {
			return Admission{}, fmt.Errorf("%s %q: %w", names.AnnotationAdmitted, item, err)
		}
		last := first
		if isRange {
			if last, err = parseAddr(lastS); err != nil {
				return Admission{}, fmt.Errorf("%s %q: %w", names.AnnotationAdmitted, item, err)
			}
			if first.Is4() != last.Is4() || first.Compare(last) > 0 {
				return Admission{}, fmt.Errorf("%s %q: not a range (same family, first <= last)", names.AnnotationAdmitted, item)
			}
		}
		rs = append(rs, addrRange{first, last})
	}
	return Admission{ranges: merge(rs)}, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %s has a zone", a)
	}
	return a.Unmap(), nil
}

// NodeAdmission reads the Node's names.AnnotationAdmitted. ok is false when it is
// absent or malformed; the Admission then admits nothing.
func NodeAdmission(n *v1.Node) (a Admission, ok bool) {
	v, present := n.Annotations[names.AnnotationAdmitted]
	if !present {
		return Admission{}, false
	}
	a, err := ParseAdmission(v)
	if err != nil {
		return Admission{}, false
	}
	return a, true
}

// Admits reports whether ip may be sent from by the VM.
func (a Admission) Admits(ip netip.Addr) bool {
	if a.unfiltered {
		return true
	}
	ip = ip.Unmap().WithZone("")
	// The first range not entirely below ip is the only one that can hold it.
	i, _ := slices.BinarySearchFunc(a.ranges, ip, func(r addrRange, ip netip.Addr) int { return r.last.Compare(ip) })
	return i < len(a.ranges) && a.ranges[i].first.Compare(ip) <= 0 && a.ranges[i].first.Is4() == ip.Is4()
}

// IsUnfiltered reports whether no filter applies.
func (a Admission) IsUnfiltered() bool { return a.unfiltered }

// String is the annotation value: canonical, so that equal admissions are
// equal strings and pvelb-ccm can skip writing an unchanged one.
func (a Admission) String() string {
	if a.unfiltered {
		return Unfiltered
	}
	var b strings.Builder
	for i, r := range a.ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.first.String())
		if r.last != r.first {
			b.WriteByte('-')
			b.WriteString(r.last.String())
		}
	}
	return b.String()
}

// merge sorts ranges and joins the ones that overlap or touch.
func merge(rs []addrRange) []addrRange {
	slices.SortFunc(rs, func(a, b addrRange) int { return a.first.Compare(b.first) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && joins(out[n-1], r) {
			if r.last.Compare(out[n-1].last) > 0 {
				out[n-1].last = r.last
			}
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// joins reports whether b (starting no earlier than a) overlaps a or starts
// right after it.
func joins(a, b addrRange) bool {
	if a.first.Is4() != b.first.Is4() {
		return false
	}
	// Next of the family's last address is invalid: nothing can follow it.
	return b.first.Compare(a.last) <= 0 || b.first == a.last.Next()
}

// lastOf is the highest address of p.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		switch lo := i * 8; {
		case p.Bits() <= lo:
			b[i] = 0xff
		case p.Bits() < lo+8:
			b[i] |= 0xff >> (p.Bits() - lo)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
