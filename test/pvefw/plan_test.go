package pvefw

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

const (
	testMAC = "BC:24:11:AA:BB:01"
	testLL  = "fe80::be24:11ff:feaa:bb01" // LinkLocal(testMAC)
	nic0    = "virtio=" + testMAC + ",bridge=vmbr0,firewall=1"
)

func state(dc bool, vms ...pvesim.FirewallVM) pvesim.FirewallState {
	st := pvesim.FirewallState{ClusterOptions: map[string]string{}}
	if dc {
		st.ClusterOptions["enable"] = "1"
	}
	for i, vm := range vms {
		vm.VMID = 100 + i
		st.VMs = append(st.VMs, vm)
	}
	return st
}

// fwvm is a VM with options given as "key=value" and net0 = nic0 unless
// nets are given.
func fwvm(opts string, sets map[string][]pve.IPSetEntry, nets ...string) pvesim.FirewallVM {
	vm := pvesim.FirewallVM{Node: "pve1", Status: "running", Nets: map[int]string{}, Options: map[string]string{}, IPSets: sets}
	for _, kv := range strings.Fields(opts) {
		k, v, _ := strings.Cut(kv, "=")
		vm.Options[k] = v
	}
	if len(nets) == 0 {
		nets = []string{nic0}
	}
	for i, n := range nets {
		vm.Nets[i] = n
	}
	return vm
}

func set0(cidrs ...string) map[string][]pve.IPSetEntry {
	entries := []pve.IPSetEntry{}
	for _, c := range cidrs {
		e := pve.IPSetEntry{CIDR: c}
		if n, ok := strings.CutPrefix(c, "!"); ok {
			e = pve.IPSetEntry{CIDR: n, NoMatch: true}
		}
		entries = append(entries, e)
	}
	return map[string][]pve.IPSetEntry{"ipfilter-net0": entries}
}

// checkSet compares a set with an expectation: "nil" for no filter, else
// space-separated "+addr" (allowed) and "-addr" (refused) probes; "" is an
// empty, non-nil set.
func checkSet(t *testing.T, what string, s *Set, want string) {
	t.Helper()
	if want == "nil" {
		if s != nil {
			t.Errorf("%s: got set {%s}, want no filter", what, s)
		}
		return
	}
	if s == nil {
		t.Errorf("%s: no filter, want %q", what, want)
		return
	}
	if want == "" && !s.Empty() {
		t.Errorf("%s: got {%s}, want an empty set", what, s)
	}
	for _, probe := range strings.Fields(want) {
		allowed := probe[0] == '+'
		a := netip.MustParseAddr(probe[1:])
		if s.Contains(a) != allowed {
			t.Errorf("%s {%s}: contains %s = %v, want %v", what, s, a, !allowed, allowed)
		}
	}
}

func TestCompile(t *testing.T) {
	type want struct {
		src4, src6, arpOut, arpIn string // see checkSet
		macFilter, dhcp, icmp     bool
	}
	open := want{src4: "nil", src6: "nil", arpOut: "nil", arpIn: "nil", macFilter: true, dhcp: true}
	with := func(w want, f func(*want)) want { f(&w); return w }
	tests := []struct {
		name    string
		cfg     Config
		st      pvesim.FirewallState
		want    []want // one per firewalled NIC; nil: none
		problem string
	}{
		// When the firewall applies at all (both daemons).
		{"datacenter firewall off", Config{Variant: Classic},
			state(false, fwvm("enable=1 ipfilter=1", set0("192.0.2.10"))), nil, ""},
		{"datacenter off, nftables", Config{Variant: Nftables},
			state(false, fwvm("enable=1 ipfilter=1", set0("192.0.2.10"))), nil, ""},
		{"VM firewall never enabled", Config{Variant: Classic},
			state(true, fwvm("ipfilter=1", set0("192.0.2.10"))), nil, ""},
		{"VM firewall disabled", Config{Variant: Nftables},
			state(true, fwvm("enable=0 ipfilter=1", set0("192.0.2.10"))), nil, ""},
		{"NIC without firewall=1", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("192.0.2.10"), "virtio="+testMAC+",bridge=vmbr0")), nil, ""},
		{"NIC with firewall=0", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("192.0.2.10"), "virtio="+testMAC+",bridge=vmbr0,firewall=0")), nil, ""},

		// Classic: pve-firewall.
		{"classic: firewall on, no IP filter: only the MAC filter", Config{Variant: Classic},
			state(true, fwvm("enable=1", nil)), []want{open}, ""},
		{"classic: ipfilter=1 and no set: an empty set, no IPv4 at all, link-local only; ARP unfiltered", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", nil)),
			[]want{with(open, func(w *want) {
				w.src4 = ""
				w.src6 = "+" + testLL + " -fe80::1 -2001:db8::10 -::"
			})}, ""},
		{"classic: a set without the ipfilter option turns the filter on", Config{Variant: Classic},
			state(true, fwvm("enable=1", set0("192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4 = "+192.0.2.10 -192.0.2.200 -0.0.0.0"
				w.src6 = "+" + testLL + " -2001:db8::10"
				w.arpOut = "+192.0.2.10 -192.0.2.200 -0.0.0.0"
			})}, ""},
		{"classic: a set with IPv6 entries only: no ARP filter, no IPv4", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("2001:db8::10"))),
			[]want{with(open, func(w *want) {
				w.src4 = ""
				w.src6 = "+" + testLL + " +2001:db8::10 -2001:db8::200"
			})}, ""},
		{"classic: an empty set: no ARP filter", Config{Variant: Classic},
			state(true, fwvm("enable=1", set0())),
			[]want{with(open, func(w *want) { w.src4, w.src6 = "", "+"+testLL })}, ""},
		{"classic: nomatch inside a network refuses; ebtables takes nomatch entries as allowed", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("192.0.2.0/24", "!192.0.2.200"))),
			[]want{with(open, func(w *want) {
				w.src4 = "+192.0.2.10 +192.0.2.199 -192.0.2.200 -198.51.100.1"
				w.src6 = "+" + testLL
				w.arpOut = "+192.0.2.10 +192.0.2.200 -198.51.100.1"
			})}, ""},
		{"classic: the most specific entry decides", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("!192.0.2.0/24", "192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4 = "+192.0.2.10 -192.0.2.11"
				w.src6 = "+" + testLL
				w.arpOut = "+192.0.2.10 +192.0.2.11"
			})}, ""},
		{"classic: a set entry more specific than fe80::/10 admits other link-locals", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("fe80::/64", "192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4 = "+192.0.2.10"
				w.src6 = "+" + testLL + " +fe80::1 -fe81::1"
				w.arpOut = "+192.0.2.10"
			})}, ""},
		{"classic: fe80::/10 in the set is overridden by the implicit nomatch", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1", set0("fe80::/10", "192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4 = "+192.0.2.10"
				w.src6 = "+" + testLL + " -fe80::1"
				w.arpOut = "+192.0.2.10"
			})}, ""},
		{"classic: macfilter=0 and dhcp=0", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=1 macfilter=0 dhcp=0", set0("192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4, w.src6, w.arpOut = "+192.0.2.10", "+"+testLL, "+192.0.2.10"
				w.macFilter, w.dhcp = false, false
			})}, ""},
		{"classic: only firewalled NICs, each with its own set", Config{Variant: Classic},
			state(true, fwvm("enable=1", map[string][]pve.IPSetEntry{"ipfilter-net2": {{CIDR: "192.0.2.12"}}},
				nic0, "virtio=BC:24:11:AA:BB:02,bridge=vmbr0", "virtio=BC:24:11:AA:BB:03,bridge=vmbr0,firewall=1")),
			[]want{open, with(open, func(w *want) {
				w.src4, w.src6, w.arpOut = "+192.0.2.12 -192.0.2.10", "+fe80::be24:11ff:feaa:bb03 -"+testLL, "+192.0.2.12"
			})}, ""},
		{"classic: ipfilter=0 explicit", Config{Variant: Classic},
			state(true, fwvm("enable=1 ipfilter=0", nil)), []want{open}, ""},

		// Nftables: proxmox-firewall.
		{"nftables: a set without ipfilter=1 does nothing", Config{Variant: Nftables},
			state(true, fwvm("enable=1", set0("192.0.2.10"))),
			[]want{with(open, func(w *want) { w.dhcp, w.icmp = false, true })}, ""},
		{"nftables: ipfilter=1 and no set: link-local only, every ARP dropped", Config{Variant: Nftables},
			state(true, fwvm("enable=1 ipfilter=1", nil)),
			[]want{with(open, func(w *want) {
				w.src4, w.src6, w.arpOut = "", "+"+testLL+" -fe80::1 -::", ""
				w.dhcp, w.icmp = false, true
			})}, ""},
		{"nftables: the NIC line's ip= is for containers only", Config{Variant: Nftables},
			state(true, fwvm("enable=1 ipfilter=1", nil, nic0+",ip=192.0.2.10/24")),
			[]want{with(open, func(w *want) {
				w.src4, w.src6, w.arpOut = "", "+"+testLL, ""
				w.dhcp, w.icmp = false, true
			})}, ""},
		{"nftables: an explicit set gets no link-local", Config{Variant: Nftables},
			state(true, fwvm("enable=1 ipfilter=1", set0("192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4, w.src6, w.arpOut = "+192.0.2.10 -192.0.2.200", "", "+192.0.2.10 -192.0.2.200 -0.0.0.0"
				w.dhcp, w.icmp = false, true
			})}, ""},
		{"nftables: nomatch always refuses IP; the ARP rule ignores it", Config{Variant: Nftables},
			state(true, fwvm("enable=1 ipfilter=1", set0("!192.0.2.0/24", "192.0.2.10", "2001:db8::/64", "!2001:db8::200"))),
			[]want{with(open, func(w *want) {
				w.src4 = "-192.0.2.10 -192.0.2.11"
				w.src6 = "+2001:db8::11 -2001:db8::200 -" + testLL
				w.arpOut = "+192.0.2.10 -192.0.2.11"
				w.dhcp, w.icmp = false, true
			})}, ""},
		{"nftables: DropInboundARP filters ARP targets too", Config{Variant: Nftables, DropInboundARP: true},
			state(true, fwvm("enable=1 ipfilter=1 macfilter=0", set0("192.0.2.10"))),
			[]want{with(open, func(w *want) {
				w.src4, w.src6, w.arpOut, w.arpIn = "+192.0.2.10", "", "+192.0.2.10", "+192.0.2.10 -192.0.2.200"
				w.macFilter, w.dhcp, w.icmp = false, false, true
			})}, ""},
		{"nftables: DropInboundARP without ipfilter does nothing", Config{Variant: Nftables, DropInboundARP: true},
			state(true, fwvm("enable=1", set0("192.0.2.10"))),
			[]want{with(open, func(w *want) { w.dhcp, w.icmp = false, true })}, ""},

		// What cannot be compiled is skipped and said.
		{"a NIC line without a MAC", Config{Variant: Classic},
			state(true, fwvm("enable=1", nil, "virtio,bridge=vmbr0,firewall=1", nic0)),
			[]want{open}, "vm 100 net0: no MAC address"},
		{"an entry that is no address", Config{Variant: Classic},
			state(true, fwvm("enable=1", set0("myalias", "192.0.2.10"))),
			[]want{with(open, func(w *want) { w.src4, w.src6, w.arpOut = "+192.0.2.10", "+"+testLL, "+192.0.2.10" })},
			`vm 100 ipfilter-net0: entry "myalias" is not an address or CIDR`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nics, problems := Compile(tt.st, tt.cfg)
			if len(nics) != len(tt.want) {
				t.Fatalf("%d NICs filtered, want %d: %+v", len(nics), len(tt.want), nics)
			}
			var msgs []string
			for _, p := range problems {
				msgs = append(msgs, p.Error())
			}
			if got := strings.Join(msgs, "; "); (tt.problem == "") != (got == "") || !strings.Contains(got, tt.problem) {
				t.Errorf("problems %q, want %q", got, tt.problem)
			}
			for i, w := range tt.want {
				n := nics[i]
				checkSet(t, "Src4", n.Src4, w.src4)
				checkSet(t, "Src6", n.Src6, w.src6)
				checkSet(t, "ARPSender", n.ARPSender, w.arpOut)
				checkSet(t, "ARPTarget", n.ARPTarget, w.arpIn)
				if n.MACFilter != w.macFilter || n.DHCPBypass != w.dhcp || n.ICMPErrors != w.icmp {
					t.Errorf("MACFilter %v DHCPBypass %v ICMPErrors %v, want %v %v %v",
						n.MACFilter, n.DHCPBypass, n.ICMPErrors, w.macFilter, w.dhcp, w.icmp)
				}
				if n.VMID != 100 {
					t.Errorf("VMID %d", n.VMID)
				}
			}
		})
	}
}

// NICs come out sorted by VMID, then net index, whatever the map order.
func TestCompileOrder(t *testing.T) {
	st := state(true,
		fwvm("enable=1", nil, nic0, nic0, nic0, nic0),
		fwvm("enable=1", nil, nic0, nic0))
	for range 10 {
		nics, _ := Compile(st, Config{Variant: Classic})
		var got []string
		for _, n := range nics {
			got = append(got, netip.AddrFrom4([4]byte{0, 0, byte(n.VMID - 100), byte(n.Net)}).String())
		}
		if strings.Join(got, " ") != "0.0.0.0 0.0.0.1 0.0.0.2 0.0.0.3 0.0.1.0 0.0.1.1" {
			t.Fatalf("order %v", got)
		}
	}
}

func TestLinkLocal(t *testing.T) {
	for mac, want := range map[string]string{
		"BC:24:11:49:8D:75": "fe80::be24:11ff:fe49:8d75", // Proxmox's own example
		"02:00:5e:00:00:0b": "fe80::5eff:fe00:b",         // a netlab node: the U/L bit flips back
		testMAC:             testLL,
	} {
		hw, _ := net.ParseMAC(mac)
		if got := LinkLocal(hw).String(); got != want {
			t.Errorf("LinkLocal(%s) = %s, want %s", mac, got, want)
		}
	}
}

func TestVariantPeriods(t *testing.T) {
	if Classic.DefaultPeriod().Seconds() != 10 || Nftables.DefaultPeriod().Seconds() != 5 {
		t.Errorf("periods %v %v", Classic.DefaultPeriod(), Nftables.DefaultPeriod())
	}
	if Classic.String() != "classic" || Nftables.String() != "nftables" || Variant(7).String() != "Variant(7)" {
		t.Error("names")
	}
}
