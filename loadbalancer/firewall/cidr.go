package firewall

import (
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// RangeToCIDRs returns the fewest prefixes that together hold exactly the
// addresses first..last (inclusive), in address order. It returns nil when the
// range is empty or invalid: first after last, different families, zones.
// IPv4-mapped IPv6 addresses are treated as IPv4.
//
// A range spanning the whole family yields a single /0; Proxmox refuses /0,
// so callers that write to Proxmox pass the result through proxmoxPrefixes.
func RangeToCIDRs(first, last netip.Addr) []netip.Prefix {
	first, last = first.Unmap(), last.Unmap()
	if first.Zone() != "" || last.Zone() != "" {
		return nil
	}
	// Prefixes is nil for an invalid range (first after last, families differ).
	return netipx.IPRangeFrom(first, last).Prefixes()
}

// proxmoxPrefixes replaces any /0 by its two /1 halves, because Proxmox
// refuses "/0" as an IPSet cidr.
func proxmoxPrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if p.Bits() != 0 {
			out = append(out, p)
			continue
		}
		lo := netip.PrefixFrom(p.Addr(), 1).Masked()
		out = append(out, lo, netip.PrefixFrom(netipx.PrefixLastIP(p), 1).Masked())
	}
	return out
}

// FormatCIDR renders p the way Proxmox stores it: host bits zeroed, and a
// single address without /32 or /128. Sending this form keeps deletes exact
// (Proxmox compares a delete's cidr to the stored string).
func FormatCIDR(p netip.Prefix) string {
	p = p.Masked()
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// ParseCIDR reads an IPSet entry's cidr: an address, or a prefix (host bits
// are zeroed). ok is false for anything else, such as a firewall alias name;
// such entries never belong to pvelb's comparisons.
func ParseCIDR(s string) (p netip.Prefix, ok bool) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return netip.Prefix{}, false
		}
		return unmapPrefix(p).Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if !p.Addr().Is4In6() {
		return p
	}
	bits := p.Bits() - 96
	if bits < 0 {
		// An IPv4-mapped prefix shorter than ::ffff:0:0/96 is really IPv6.
		return p
	}
	return netip.PrefixFrom(p.Addr().Unmap(), bits)
}

// hostPrefix is the single-address prefix of a.
func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// covers reports whether outer holds every address of inner.
func covers(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() &&
		outer.Contains(inner.Addr())
}
