package allocator

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// Contains reports whether a lies in the range.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.First.Is4() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Family of the range.
func (r Range) Family() Family {
	if r.First.Is4() {
		return IPv4
	}
	return IPv6
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// ParseRange parses one IPPool address entry: a CIDR (host bits must be clear)
// or "first-last" of one family with first <= last. The apiserver already
// refuses anything else; this is the second line of defence for pools that
// bypass admission (and for tests).
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("address %q: %v", s, err)
		}
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return Range{}, fmt.Errorf("address %q: IPv4-mapped and zoned addresses are not allowed", s)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("address %q: CIDR has host bits set (did you mean %s?)", s, p.Masked())
		}
		return Range{First: p.Addr(), Last: netipx.PrefixLastIP(p)}, nil
	}
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		return Range{}, fmt.Errorf("address %q: must be a CIDR or a range first-last", s)
	}
	a, err := parseAddr(strings.TrimSpace(first))
	if err != nil {
		return Range{}, fmt.Errorf("address %q: %v", s, err)
	}
	b, err := parseAddr(strings.TrimSpace(last))
	if err != nil {
		return Range{}, fmt.Errorf("address %q: %v", s, err)
	}
	if a.Is4() != b.Is4() {
		return Range{}, fmt.Errorf("address %q: range mixes IPv4 and IPv6", s)
	}
	if a.Compare(b) > 0 {
		return Range{}, fmt.Errorf("address %q: range ends before it starts", s)
	}
	return Range{First: a, Last: b}, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s: IPv4-mapped and zoned addresses are not allowed", s)
	}
	return a, nil
}

// ParseRanges parses every entry, then sorts and merges overlapping or
// adjacent ranges so that each address appears once (an address listed twice
// in one pool is still one address).
func ParseRanges(entries []string) ([]Range, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("addresses: at least one entry is required")
	}
	rs := make([]Range, 0, len(entries))
	for i, e := range entries {
		r, err := ParseRange(e)
		if err != nil {
			return nil, fmt.Errorf("addresses[%d]: %w", i, err)
		}
		rs = append(rs, r)
	}
	return mergeRanges(rs), nil
}

// mergeRanges sorts rs and joins the ranges that overlap or touch.
func mergeRanges(rs []Range) []Range {
	var b netipx.IPSetBuilder
	for _, r := range rs {
		b.AddRange(netipx.IPRangeFrom(r.First, r.Last))
	}
	set, _ := b.IPSet() // adding ranges cannot fail
	out := rs[:0]
	for _, r := range set.Ranges() {
		out = append(out, Range{First: r.From(), Last: r.To()})
	}
	return out
}

// size returns the number of addresses in r.
func (r Range) size() *big.Int {
	n := new(big.Int).Sub(addrInt(r.Last), addrInt(r.First))
	return n.Add(n, big.NewInt(1))
}

func addrInt(a netip.Addr) *big.Int {
	return new(big.Int).SetBytes(a.AsSlice())
}

// buggyIn counts the IPv4 addresses ending in .0 or .255 within r.
func (r Range) buggyIn() *big.Int {
	if !r.First.Is4() {
		return new(big.Int)
	}
	f, l := v4int(r.First), v4int(r.Last)
	// Count x in [f,l] with x%256==0, plus x%256==255.
	count := func(rem uint64) uint64 {
		// numbers <= n congruent to rem mod 256
		upto := func(n int64) int64 {
			if n < int64(rem) {
				return 0
			}
			return (n-int64(rem))/256 + 1
		}
		return uint64(upto(int64(l)) - upto(int64(f)-1))
	}
	return new(big.Int).SetUint64(count(0) + count(255))
}

func v4int(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// isBuggy reports IPv4 addresses ending in .0 or .255, which some clients and
// routers take for network or broadcast addresses even outside a /24.
func isBuggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}
