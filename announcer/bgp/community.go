package bgp

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// LargeCommunity is an RFC 8092 community: three 32-bit numbers, written A:B:C.
type LargeCommunity struct {
	GlobalAdmin, LocalData1, LocalData2 uint32
}

func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c.GlobalAdmin, c.LocalData1, c.LocalData2)
}

func compareLarge(a, b LargeCommunity) int {
	if a.GlobalAdmin != b.GlobalAdmin {
		return cmpU32(a.GlobalAdmin, b.GlobalAdmin)
	}
	if a.LocalData1 != b.LocalData1 {
		return cmpU32(a.LocalData1, b.LocalData1)
	}
	return cmpU32(a.LocalData2, b.LocalData2)
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Communities is a parsed, sorted and de-duplicated set of communities, the
// form routes are compared in (so "no-export" and "65535:65281" are equal).
type Communities struct {
	Standard []uint32
	Large    []LargeCommunity
}

// wellKnown are the names IPPool.spec.announce.communities accepts, with the
// values IANA assigned them (RFC 1997, 7999, 8326, 7611, 8642, 9494).
var wellKnown = map[string]uint32{
	"graceful-shutdown":   0xFFFF0000,
	"accept-own":          0xFFFF0001,
	"llgr-stale":          0xFFFF0006,
	"no-llgr":             0xFFFF0007,
	"blackhole":           0xFFFF029A,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
}

// ParseCommunities parses standard ("65000:100", each part 0-65535), large
// ("4200000000:1:2", each part 0-4294967295) and well-known ("no-export")
// communities. The error names the offending entry by its index.
func ParseCommunities(in []string) (Communities, error) {
	var c Communities
	for i, s := range in {
		if v, ok := wellKnown[strings.ToLower(strings.TrimSpace(s))]; ok {
			c.Standard = append(c.Standard, v)
			continue
		}
		parts := strings.Split(s, ":")
		switch len(parts) {
		case 2:
			hi, err1 := parseUint(parts[0], 16)
			lo, err2 := parseUint(parts[1], 16)
			if err1 != nil || err2 != nil {
				return Communities{}, fmt.Errorf("communities[%d]: %q: a standard community is ASN:VALUE with each part 0-65535", i, s)
			}
			c.Standard = append(c.Standard, hi<<16|lo)
		case 3:
			var v [3]uint32
			for j, p := range parts {
				n, err := parseUint(p, 32)
				if err != nil {
					return Communities{}, fmt.Errorf("communities[%d]: %q: a large community is A:B:C with each part 0-4294967295", i, s)
				}
				v[j] = n
			}
			c.Large = append(c.Large, LargeCommunity{v[0], v[1], v[2]})
		default:
			return Communities{}, fmt.Errorf("communities[%d]: %q must be ASN:VALUE, A:B:C or a well-known name such as no-export", i, s)
		}
	}
	slices.Sort(c.Standard)
	c.Standard = slices.Compact(c.Standard)
	slices.SortFunc(c.Large, compareLarge)
	c.Large = slices.Compact(c.Large)
	return c, nil
}

// parseUint accepts plain decimal digits only: strconv would also take "+1".
func parseUint(s string, bits int) (uint32, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a decimal number: %q", s)
	}
	n, err := strconv.ParseUint(s, 10, bits)
	return uint32(n), err
}

// Equal reports whether both sets hold the same communities.
func (c Communities) Equal(o Communities) bool {
	return slices.Equal(c.Standard, o.Standard) && slices.Equal(c.Large, o.Large)
}
