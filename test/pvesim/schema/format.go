package schema

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Formats registered by Proxmox (PVE::JSONSchema::register_format and the
// firewall's own). Only those the simulated endpoints use, plus cheap common
// ones, are checked; other formats are accepted, so that a schema update does
// not make the simulator refuse valid requests.
var (
	nodeRe     = regexp.MustCompile(`^(?i:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)$`)
	vmidRe     = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)
	configIDRe = regexp.MustCompile(`^(?i:[a-z][a-z0-9_-]+)$`)
	// ip_alias_pattern, optionally scoped "dc/" or "guest/".
	aliasRe   = regexp.MustCompile(`^(?:dc/|guest/)?[A-Za-z][A-Za-z0-9\-_]+$`)
	storageRe = regexp.MustCompile(`^(?i:[a-z][a-z0-9\-_.]*[a-z0-9])$`)
	macRe     = regexp.MustCompile(`^(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})$`)
	dnsRe     = regexp.MustCompile(`^(?i:(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)$`)
	ifaceRe   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_.\-]{1,20}$`)
	userRe    = regexp.MustCompile(`^[^\s:/]+@[A-Za-z][A-Za-z0-9\.\-_]+$`)
	tagRe     = regexp.MustCompile(`^(?i:[a-z0-9_][a-z0-9_\-+.]*)$`)
	listSep   = regexp.MustCompile(`[,;\s]+`)
)

var errIPorCIDR = errors.New("value does not look like a valid IP address or CIDR network")

func checkFormat(format, v string) error {
	switch format {
	case "pve-node":
		if !nodeRe.MatchString(v) {
			return errors.New("value does not look like a valid node name")
		}
	case "pve-vmid":
		if !vmidRe.MatchString(v) {
			return errors.New("value does not look like a valid VM ID")
		}
	case "pve-configid":
		if !configIDRe.MatchString(v) {
			return fmt.Errorf("invalid configuration ID '%s'", v)
		}
	case "pve-configid-list":
		for _, id := range splitList(v) {
			if !configIDRe.MatchString(id) {
				return fmt.Errorf("invalid configuration ID '%s'", id)
			}
		}
	case "pve-vmid-list":
		for _, id := range splitList(v) {
			if !vmidRe.MatchString(id) {
				return errors.New("value does not look like a valid VM ID")
			}
		}
	case "pve-storage-id":
		if !storageRe.MatchString(v) {
			return fmt.Errorf("storage ID '%s' contains illegal characters", v)
		}
	case "IPorCIDRorAlias":
		if aliasRe.MatchString(v) {
			return nil
		}
		return checkIPorCIDR(v)
	case "IPorCIDR":
		return checkIPorCIDR(v)
	case "CIDR", "CIDRv4", "CIDRv6":
		p, err := netip.ParsePrefix(v)
		if err != nil || (format == "CIDRv4" && !p.Addr().Is4()) || (format == "CIDRv6" && !p.Addr().Is6()) {
			return errors.New("value does not look like a valid CIDR network")
		}
	case "ip", "address":
		if _, err := netip.ParseAddr(v); err != nil {
			return errors.New("value does not look like a valid IP address")
		}
	case "ipv4":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return errors.New("value does not look like a valid IPv4 address")
		}
	case "ipv6":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is6() {
			return errors.New("value does not look like a valid IPv6 address")
		}
	case "mac-addr":
		if !macRe.MatchString(v) {
			return errors.New("value does not look like a valid unicast MAC address")
		}
	case "dns-name":
		if !dnsRe.MatchString(v) {
			return errors.New("value does not look like a valid DNS name")
		}
	case "pve-iface":
		if !ifaceRe.MatchString(v) {
			return errors.New("invalid network interface name")
		}
	case "pve-userid":
		if !userRe.MatchString(v) {
			return errors.New("value does not look like a valid user name")
		}
	case "pve-tag-list":
		for _, t := range splitList(v) {
			if !tagRe.MatchString(t) {
				return fmt.Errorf("invalid tag '%s'", t)
			}
		}
	}
	return nil
}

// checkIPorCIDR accepts an address or address/length with a length valid for
// the family; host bits may be set (the firewall zeroes them on add).
func checkIPorCIDR(v string) error {
	addr, bits, hasLen := strings.Cut(v, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return errIPorCIDR
	}
	if !hasLen {
		return nil
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > a.BitLen() || strings.HasPrefix(bits, "+") {
		return errIPorCIDR
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range listSep.Split(v, -1) {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
