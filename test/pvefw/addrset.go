package pvefw

import (
	"net/netip"
	"slices"
	"strings"
)

// Set is a set of addresses of one family, kept as sorted, disjoint,
// non-adjacent ranges. Both firewalls match on IPSets whose entries overlap
// and exclude each other (nomatch); the emulator resolves that once, here,
// so the rules it writes hold plain sets that nft accepts without
// auto-merge. The zero Set is empty.
type Set struct {
	ranges []addrRange
}

type addrRange struct{ from, to netip.Addr }

// Contains reports whether a is in the set.
func (s Set) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, r := range s.ranges {
		if a.BitLen() == r.from.BitLen() && r.from.Compare(a) <= 0 && a.Compare(r.to) <= 0 {
			return true
		}
	}
	return false
}

// Empty reports whether the set holds no address.
func (s Set) Empty() bool { return len(s.ranges) == 0 }

// Prefixes returns the set as the fewest prefixes that cover exactly it, in
// address order: what the rules list.
func (s Set) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range s.ranges {
		out = append(out, rangePrefixes(r)...)
	}
	return out
}

// String is the set as nft elements: "192.0.2.11, 192.0.2.16/28" (a host
// prefix is written as the bare address, as nft lists it).
func (s Set) String() string {
	var parts []string
	for _, p := range s.Prefixes() {
		if p.IsSingleIP() {
			parts = append(parts, p.Addr().String())
		} else {
			parts = append(parts, p.String())
		}
	}
	return strings.Join(parts, ", ")
}

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	return addrRange{from: p.Addr(), to: lastAddr(p)}
}

// lastAddr is the prefix's highest address (every host bit set).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// with returns s plus r.
func (s Set) with(r addrRange) Set {
	out := make([]addrRange, 0, len(s.ranges)+1)
	for _, x := range s.ranges {
		// Disjoint and not adjacent: keep as is; otherwise absorb into r.
		if x.to.Next().IsValid() && x.to.Next().Compare(r.from) < 0 || r.to.Next().IsValid() && r.to.Next().Compare(x.from) < 0 {
			out = append(out, x)
			continue
		}
		if x.from.Compare(r.from) < 0 {
			r.from = x.from
		}
		if x.to.Compare(r.to) > 0 {
			r.to = x.to
		}
	}
	out = append(out, r)
	slices.SortFunc(out, func(a, b addrRange) int { return a.from.Compare(b.from) })
	return Set{ranges: out}
}

// without returns s minus r.
func (s Set) without(r addrRange) Set {
	var out []addrRange
	for _, x := range s.ranges {
		if x.to.Compare(r.from) < 0 || x.from.Compare(r.to) > 0 {
			out = append(out, x)
			continue
		}
		if x.from.Compare(r.from) < 0 {
			out = append(out, addrRange{from: x.from, to: r.from.Prev()})
		}
		if x.to.Compare(r.to) > 0 {
			out = append(out, addrRange{from: r.to.Next(), to: x.to})
		}
	}
	return Set{ranges: out}
}

// rangePrefixes splits a range into the fewest prefixes: at each step the
// largest block that starts at from and ends within the range.
func rangePrefixes(r addrRange) []netip.Prefix {
	var out []netip.Prefix
	from := r.from
	for {
		var p netip.Prefix
		for bits := 0; bits <= from.BitLen(); bits++ {
			p = netip.PrefixFrom(from, bits)
			if p.Masked().Addr() == from && lastAddr(p).Compare(r.to) <= 0 {
				break
			}
		}
		out = append(out, p)
		last := lastAddr(p)
		if last.Compare(r.to) >= 0 || !last.Next().IsValid() {
			return out
		}
		from = last.Next()
	}
}
