package allocator

import (
	"net/netip"
	"sort"
)

// addrSet is a set of addresses kept as sorted, disjoint, non-adjacent
// intervals. Allocation asks "lowest free address >= x" many times; with
// intervals that is a binary search plus a jump over one interval, instead of
// a walk over every used address (or, worse, over an IPv6 pool).
type addrSet struct {
	iv []Range
}

// find returns the index of the last interval starting at or before a, or -1.
func (s *addrSet) find(a netip.Addr) int {
	i := sort.Search(len(s.iv), func(i int) bool { return a.Less(s.iv[i].First) })
	return i - 1
}

func (s *addrSet) contains(a netip.Addr) bool {
	i := s.find(a)
	return i >= 0 && s.iv[i].Contains(a)
}

func adjacent(a, b netip.Addr) bool {
	n := a.Next()
	return n.IsValid() && n == b && a.Is4() == b.Is4()
}

func (s *addrSet) add(a netip.Addr) {
	i := s.find(a)
	if i >= 0 && s.iv[i].Contains(a) {
		return
	}
	joinPrev := i >= 0 && adjacent(s.iv[i].Last, a)
	joinNext := i+1 < len(s.iv) && adjacent(a, s.iv[i+1].First)
	switch {
	case joinPrev && joinNext:
		s.iv[i].Last = s.iv[i+1].Last
		s.iv = append(s.iv[:i+1], s.iv[i+2:]...)
	case joinPrev:
		s.iv[i].Last = a
	case joinNext:
		s.iv[i+1].First = a
	default:
		s.iv = append(s.iv, Range{})
		copy(s.iv[i+2:], s.iv[i+1:])
		s.iv[i+1] = Range{First: a, Last: a}
	}
}

func (s *addrSet) remove(a netip.Addr) {
	i := s.find(a)
	if i < 0 || !s.iv[i].Contains(a) {
		return
	}
	r := s.iv[i]
	switch {
	case r.First == a && r.Last == a:
		s.iv = append(s.iv[:i], s.iv[i+1:]...)
	case r.First == a:
		s.iv[i].First = a.Next()
	case r.Last == a:
		s.iv[i].Last = a.Prev()
	default:
		s.iv[i].Last = a.Prev()
		s.iv = append(s.iv, Range{})
		copy(s.iv[i+2:], s.iv[i+1:])
		s.iv[i+1] = Range{First: a.Next(), Last: r.Last}
	}
}

// nextFree returns the lowest address >= a of a's family that is not in the
// set, or an invalid Addr when the family's address space is used up.
func (s *addrSet) nextFree(a netip.Addr) netip.Addr {
	i := s.find(a)
	if i >= 0 && s.iv[i].Contains(a) {
		// Intervals are non-adjacent, so the address after this one is free.
		n := s.iv[i].Last.Next()
		if !n.IsValid() || n.Is4() != a.Is4() {
			return netip.Addr{}
		}
		return n
	}
	return a
}
