package pve

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
)

// NormalizeCIDR returns s in the exact form Proxmox stores an IPSet entry:
// host bits zeroed, /32 and /128 dropped, IPv6 in its canonical short form.
// Proxmox compares a DELETE path's cidr to the stored string byte for byte and
// treats a miss as success, so every cidr we send must be in this form or a
// delete silently removes nothing.
//
// IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) are turned into plain IPv4,
// because Proxmox keeps IPv4 and IPv6 entries in different kernel sets and a
// mapped address in the IPv6 set would never match an IPv4 packet. /0 is
// refused like Proxmox refuses it.
func NormalizeCIDR(s string) (string, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return "", fmt.Errorf("cidr: must not be empty")
	}
	var (
		addr netip.Addr
		bits int
		err  error
	)
	if i := strings.IndexByte(in, '/'); i >= 0 {
		var p netip.Prefix
		p, err = netip.ParsePrefix(in)
		if err != nil {
			return "", fmt.Errorf("cidr %q: not an IP address or network: %v", s, err)
		}
		addr, bits = p.Addr(), p.Bits()
	} else {
		addr, err = netip.ParseAddr(in)
		if err != nil {
			return "", fmt.Errorf("cidr %q: not an IP address or network: %v", s, err)
		}
		if addr.Zone() != "" {
			return "", fmt.Errorf("cidr %q: addresses with a zone are not allowed", s)
		}
		bits = addr.BitLen()
	}
	if addr.Is4In6() {
		if bits < 96 {
			return "", fmt.Errorf("cidr %q: IPv4-mapped network shorter than /96 mixes IPv4 and IPv6", s)
		}
		addr, bits = addr.Unmap(), bits-96
	}
	if bits == 0 {
		return "", fmt.Errorf("cidr %q: a /0 network is not allowed", s)
	}
	if bits == addr.BitLen() {
		return addr.String(), nil
	}
	return netip.PrefixFrom(addr, bits).Masked().String(), nil
}

// cidrSegment is the {cidr} path segment: normalised, then escaped so that a
// network's '/' travels as %2F inside one segment.
func cidrSegment(cidr string) (string, error) {
	n, err := NormalizeCIDR(cidr)
	if err != nil {
		return "", err
	}
	return url.PathEscape(n), nil
}

// nodeNameRE is a Proxmox node name (a host name label).
var nodeNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

func validateVMRef(vm VMRef) error {
	if !nodeNameRE.MatchString(vm.Node) {
		return fmt.Errorf("vm node %q: not a valid Proxmox node name", vm.Node)
	}
	if vm.VMID < 100 || vm.VMID > 999999999 {
		return fmt.Errorf("vm id %d: must be between 100 and 999999999", vm.VMID)
	}
	return nil
}
