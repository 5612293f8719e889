package pvefw

import (
	"fmt"
	"strconv"
	"strings"
)

// Port is a NIC bound to the bridge port that carries its frames.
type Port struct {
	NIC
	Name string // the bridge port (netlab's Host.BridgePort)
}

// CounterName is the named nft counter of a VM's dropped frames: every drop
// rule of every NIC of the VM counts there.
func CounterName(vmid int) string { return "vm" + strconv.Itoa(vmid) }

// Chain priorities. The out-chain runs at -10, before br_netfilter's bridge
// prerouting hook (0), which hands IPv4 and IPv6 frames to the IP stack's
// hooks and resumes the bridge's own later: whatever registered first, the
// filter decides before anything else in the switch namespace sees a frame.
// The in-chain sits at 0, like proxmox-firewall's vm-in.
const (
	outPriority = -10
	inPriority  = 0
)

// Script renders the nft script for one pass: it declares the table, its
// two chains and one counter per VM (declaring an existing one keeps it and
// its values), flushes every rule and adds the ports' rules, all in one
// transaction (`nft -f`), so no frame ever meets half a ruleset and drop
// counts survive every pass. Frames from a VM are filtered in "out"
// (prerouting: they enter the bridge at the VM's port), frames to it in "in"
// (postrouting: they leave at that port). Ports are rendered in the order
// given.
func Script(table string, v Variant, ports []Port) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s firewall emulated from the Proxmox simulator's state\n", v)
	fmt.Fprintf(&b, "table bridge %s {\n", table)
	fmt.Fprintf(&b, "\tchain out { type filter hook prerouting priority %d; policy accept; }\n", outPriority)
	fmt.Fprintf(&b, "\tchain in { type filter hook postrouting priority %d; policy accept; }\n", inPriority)
	b.WriteString("}\n")
	fmt.Fprintf(&b, "flush table bridge %s\n", table)
	counters := map[int]bool{}
	for _, p := range ports {
		if p.Filters() && !counters[p.VMID] {
			counters[p.VMID] = true
			fmt.Fprintf(&b, "add counter bridge %s %s\n", table, CounterName(p.VMID))
		}
	}
	for _, p := range ports {
		for _, r := range rules(v, p) {
			fmt.Fprintf(&b, "add rule bridge %s %s\n", table, r)
		}
	}
	return b.String()
}

// rules renders one port's rules ("<chain> <rule>"), in the order the
// daemon evaluates them.
func rules(v Variant, p Port) []string {
	if !p.Filters() {
		return nil
	}
	in := fmt.Sprintf("iifname %q ", p.Name)
	out := fmt.Sprintf("oifname %q ", p.Name)
	mac := p.MAC.String()
	ipfilter := "not in ipfilter-net" + strconv.Itoa(p.Net)
	var r []string
	// add appends a drop rule counted for the VM, its comment naming the
	// NIC and the reason, for `nft list`.
	add := func(chain, match, reason string) {
		r = append(r, fmt.Sprintf("%s %s counter name %q drop comment %q",
			chain, match, CounterName(p.VMID), fmt.Sprintf("vm%d net%d: %s", p.VMID, p.Net, reason)))
	}
	srcRules := func() {
		if p.Src4 != nil {
			add("out", in+notIn("ip saddr", "ip", *p.Src4), "IPv4 source "+ipfilter)
		}
		if p.Src6 != nil {
			add("out", in+notIn("ip6 saddr", "ip6", *p.Src6), "IPv6 source "+ipfilter)
		}
	}
	switch v {
	case Nftables:
		// vm-out jumps to allow-icmp before any guest chain.
		if p.ICMPErrors {
			r = append(r,
				"out "+in+"icmp type { destination-unreachable, source-quench, time-exceeded } accept",
				"out "+in+"icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept")
		}
		// guest-<vmid>-out: the IP filter first, then the MAC filter.
		srcRules()
		if p.ARPSender != nil {
			add("out", in+notIn("arp saddr ip", "arp", *p.ARPSender), "ARP sender "+ipfilter)
		}
		if p.MACFilter {
			add("out", in+"ether saddr != "+mac, "source MAC is not the NIC's")
			add("out", in+"arp saddr ether != "+mac, "ARP sender MAC is not the NIC's")
		}
		if p.ARPTarget != nil {
			add("in", out+notIn("arp daddr ip", "arp", *p.ARPTarget), "ARP target "+ipfilter)
		}
	default:
		// ebtables (tap<vmid>i<n>-OUT) sees the frame first.
		if p.MACFilter {
			add("out", in+"ether saddr != "+mac, "source MAC is not the NIC's")
		}
		if p.ARPSender != nil {
			add("out", in+notIn("arp saddr ip", "arp", *p.ARPSender), "ARP sender "+ipfilter)
		}
		// Then iptables' tap<vmid>i<n>-OUT: DHCP goes to the accept mark
		// before the IP filter.
		if p.DHCPBypass && p.Src4 != nil {
			r = append(r, "out "+in+"meta protocol ip udp sport 68 udp dport 67 accept")
		}
		if p.DHCPBypass && p.Src6 != nil {
			r = append(r, "out "+in+"meta protocol ip6 udp sport 546 udp dport 547 accept")
		}
		srcRules()
	}
	return r
}

// notIn matches a field outside a set; an empty set matches every frame of
// the protocol (nft refuses an empty anonymous set).
func notIn(field, proto string, s Set) string {
	if s.Empty() {
		return "ether type " + proto
	}
	return field + " != { " + s.String() + " }"
}
