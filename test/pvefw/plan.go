package pvefw

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// Variant is the Proxmox firewall implementation emulated.
type Variant int

const (
	// Classic is pve-firewall: iptables/ip6tables with ipsets for IP, and
	// ebtables for layer 2 (MAC filter, ARP filter). The default.
	Classic Variant = iota + 1
	// Nftables is proxmox-firewall, the opt-in nftables implementation.
	Nftables
)

func (v Variant) String() string {
	switch v {
	case Classic:
		return "classic"
	case Nftables:
		return "nftables"
	}
	return "Variant(" + strconv.Itoa(int(v)) + ")"
}

// DefaultPeriod is how often the real daemon recompiles and applies its
// rules: pve-firewall's update loop runs every 10 s, proxmox-firewall's every
// 5 s. A change in Proxmox takes up to that long to bite.
func (v Variant) DefaultPeriod() time.Duration {
	if v == Nftables {
		return 5 * time.Second
	}
	return 10 * time.Second
}

// Config chooses what Compile emulates.
type Config struct {
	Variant Variant
	// DropInboundARP (Nftables only) drops ARP sent to the VM whose target
	// address is not in the IP filter set. proxmox-firewall generates that
	// rule in the guest's in-chain, but after the chain's first rule jumps
	// to pre-vm-in, whose `meta protocol arp accept` ends the evaluation: on
	// a real host it never matches (proxmox-firewall's sources of May 2026;
	// ARP has been accepted ahead of the guest chains since May 2024). Off,
	// the emulation does what a real host does; on, it does what the rule
	// says, for tests of that stricter behaviour.
	DropInboundARP bool
}

// NIC is what the firewall does to one VM network device: the frames from
// the VM (entering the bridge at its port) and to it that are dropped. Nil
// sets mean no filtering of that kind; an empty set drops everything of it.
type NIC struct {
	VMID int
	Net  int // the N of netN, so the IP filter set is ipfilter-netN
	MAC  net.HardwareAddr

	// MACFilter drops frames from the VM whose Ethernet source (nftables:
	// also ARP sender hardware address) is not MAC (option macfilter,
	// default on).
	MACFilter bool
	// DHCPBypass (Classic): the VM's DHCP client messages (UDP 68->67 and
	// 546->547) are accepted before the IP filter, so a VM without an
	// address can still get one (option dhcp, default on).
	DHCPBypass bool
	// ICMPErrors (Nftables): ICMP and ICMPv6 error messages from the VM are
	// accepted before the IP filter (the allow-icmp chain).
	ICMPErrors bool

	// Src4 and Src6 are the source addresses the VM may send IPv4 and IPv6
	// from: the IP filter. ARPSender is what outgoing ARP may carry as
	// sender IP; ARPTarget what ARP sent to the VM may ask for.
	Src4, Src6, ARPSender, ARPTarget *Set
}

// Filters reports whether the NIC drops anything at all.
func (n NIC) Filters() bool {
	return n.MACFilter || n.Src4 != nil || n.Src6 != nil || n.ARPSender != nil || n.ARPTarget != nil
}

// LinkLocal is the IPv6 link-local address both firewalls derive from a MAC
// (modified EUI-64, RFC 4291), which is what a guest's kernel configures by
// default.
func LinkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// entry is one parsed IPSet entry.
type entry struct {
	prefix  netip.Prefix
	nomatch bool
}

// Compile decides, from a snapshot of the simulator, what the firewall does
// to every VM NIC, as the chosen daemon would compile it. It returns the
// firewalled NICs sorted by VMID and net index, and what it had to skip
// (unparseable NIC lines or set entries; the daemons warn and go on too).
//
// Both daemons install nothing unless the datacenter firewall is on, and
// filter a NIC only when its VM's firewall is enabled and the NIC has
// firewall=1.
func Compile(st pvesim.FirewallState, cfg Config) ([]NIC, []error) {
	if !st.DatacenterEnabled() {
		return nil, nil
	}
	var nics []NIC
	var problems []error
	for _, vm := range st.VMs {
		if vm.Options["enable"] != "1" {
			continue
		}
		idx := make([]int, 0, len(vm.Nets))
		for i := range vm.Nets {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		for _, i := range idx {
			nc, err := pve.ParseNet(vm.Nets[i])
			if err != nil {
				problems = append(problems, fmt.Errorf("vm %d net%d: %w", vm.VMID, i, err))
				continue
			}
			if !nc.Firewall {
				continue
			}
			mac, err := net.ParseMAC(nc.MAC)
			if err != nil || len(mac) != 6 {
				problems = append(problems, fmt.Errorf("vm %d net%d: no MAC address in %q", vm.VMID, i, vm.Nets[i]))
				continue
			}
			name := "ipfilter-net" + strconv.Itoa(i)
			set, explicit := vm.IPSets[name]
			entries, bad := parseEntries(set)
			for _, e := range bad {
				problems = append(problems, fmt.Errorf("vm %d %s: %w", vm.VMID, name, e))
			}
			n := NIC{VMID: vm.VMID, Net: i, MAC: mac, MACFilter: vm.Options["macfilter"] != "0"}
			switch cfg.Variant {
			case Nftables:
				compileNftables(&n, vm.Options, entries, explicit, cfg.DropInboundARP)
			default:
				compileClassic(&n, vm.Options, entries, explicit)
			}
			nics = append(nics, n)
		}
	}
	return nics, problems
}

func parseEntries(set []pve.IPSetEntry) ([]entry, []error) {
	var out []entry
	var bad []error
	for _, e := range set {
		p, err := netip.ParsePrefix(e.CIDR)
		if err != nil {
			a, aerr := netip.ParseAddr(e.CIDR)
			if aerr != nil {
				// An alias, or garbage: the simulator keeps no aliases.
				bad = append(bad, fmt.Errorf("entry %q is not an address or CIDR", e.CIDR))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, entry{prefix: netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked(), nomatch: e.NoMatch})
	}
	return out, bad
}

// compileClassic follows pve-firewall. The IP filter (iptables OUT chain,
// `-m set ! --match-set ipfilter-netN src -j DROP`) is on when the VM option
// ipfilter is set or an ipfilter-netN set exists (an absent set counts as
// empty). Its ipset is hash:net: the entries, plus for IPv6 the MAC's
// link-local and fe80::/10 as nomatch, so other link-local sources are
// refused; the most specific matching entry decides, and a nomatch one
// refuses. The ARP filter (ebtables `--arp-ip-src`) exists only when an
// ipfilter-netN set with IPv4 entries exists, whatever the ipfilter option,
// and takes every IPv4 entry as allowed, nomatch or not.
func compileClassic(n *NIC, opts map[string]string, entries []entry, explicit bool) {
	n.DHCPBypass = opts["dhcp"] != "0"
	var arp Set
	for _, e := range entries {
		if e.prefix.Addr().Is4() {
			arp = arp.with(prefixRange(e.prefix))
		}
	}
	if explicit && !arp.Empty() {
		n.ARPSender = &arp
	}
	if opts["ipfilter"] != "1" && !explicit {
		return
	}
	// The device entries come after the set's, so they win a tie on the
	// same CIDR (the ipset compiler keeps the last one).
	all := append(slices.Clone(entries),
		entry{prefix: netip.PrefixFrom(LinkLocal(n.MAC), 128)},
		entry{prefix: netip.MustParsePrefix("fe80::/10"), nomatch: true})
	v4, v6 := hashNet(all, true), hashNet(all, false)
	n.Src4, n.Src6 = &v4, &v6
}

// hashNet is what an ipset hash:net with nomatch entries matches: applying
// the entries from least to most specific, each allowing or (nomatch)
// refusing its range, leaves the most specific one deciding.
func hashNet(entries []entry, v4 bool) Set {
	byCIDR := map[netip.Prefix]entry{}
	for _, e := range entries {
		if e.prefix.Addr().Is4() == v4 {
			byCIDR[e.prefix] = e
		}
	}
	sorted := make([]entry, 0, len(byCIDR))
	for _, e := range byCIDR {
		sorted = append(sorted, e)
	}
	slices.SortFunc(sorted, func(a, b entry) int { return a.prefix.Bits() - b.prefix.Bits() })
	var s Set
	for _, e := range sorted {
		if e.nomatch {
			s = s.without(prefixRange(e.prefix))
		} else {
			s = s.with(prefixRange(e.prefix))
		}
	}
	return s
}

// compileNftables follows proxmox-firewall. The IP filter exists only with
// the VM option ipfilter=1. Its set is ipfilter-netN when it exists, taken
// as it is (no link-local is added), else a default holding the MAC's
// link-local (and, for containers only, the ip/ip6 of the NIC line, which a
// QEMU NIC never has). Rules: `ip saddr != @set drop` and
// `ip saddr @set-nomatch drop` (so nomatch entries always refuse), the same
// for ip6, and `arp saddr ip != @set drop` (the nomatch set is not
// consulted); ARP from 0.0.0.0 is refused like any other sender.
func compileNftables(n *NIC, opts map[string]string, entries []entry, explicit, dropInboundARP bool) {
	n.ICMPErrors = true
	if opts["ipfilter"] != "1" {
		return
	}
	if !explicit {
		entries = []entry{{prefix: netip.PrefixFrom(LinkLocal(n.MAC), 128)}}
	}
	var allow4, allow6 Set
	for _, e := range entries {
		if e.nomatch {
			continue
		}
		if e.prefix.Addr().Is4() {
			allow4 = allow4.with(prefixRange(e.prefix))
		} else {
			allow6 = allow6.with(prefixRange(e.prefix))
		}
	}
	src4, src6, arp := allow4, allow6, allow4
	for _, e := range entries {
		if !e.nomatch {
			continue
		}
		if e.prefix.Addr().Is4() {
			src4 = src4.without(prefixRange(e.prefix))
		} else {
			src6 = src6.without(prefixRange(e.prefix))
		}
	}
	n.Src4, n.Src6, n.ARPSender = &src4, &src6, &arp
	if dropInboundARP {
		target := arp
		n.ARPTarget = &target
	}
}
