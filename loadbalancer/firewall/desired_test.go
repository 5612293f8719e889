package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

func TestDesiredValidate(t *testing.T) {
	vm := VM{Region: "east", Ref: pve.VMRef{Node: "pve1", VMID: 101}}
	tests := []struct {
		name string
		d    Desired
		err  string
	}{
		{"ok", Desired{VIPs: []VIP{{Addr: netip.MustParseAddr("192.0.2.1"), Services: []string{"a/b"}}}, VMs: []VM{vm}}, ""},
		{"bad vip", Desired{VIPs: []VIP{{}}}, "vips[0].addr"},
		{"empty service", Desired{VIPs: []VIP{{Addr: netip.MustParseAddr("192.0.2.1"), Services: []string{""}}}}, "vips[0].services[0]"},
		{"vm region", Desired{VMs: []VM{{Ref: vm.Ref}}}, "vms[0].region"},
		{"vm id", Desired{VMs: []VM{{Region: "east", Ref: pve.VMRef{Node: "pve1", VMID: 7}}}}, "vms[0].ref.vmid"},
		{"vm twice", Desired{VMs: []VM{vm, vm}}, "vms[1]: VM 101 on pve1 in region east is listed twice"},
		{"unknown vip on vm", Desired{VMs: []VM{{Region: "east", Ref: vm.Ref, VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.9")}}}},
			"vms[0].vips[0]: 192.0.2.9 is not among vips"},
		{"range order", Desired{Ranges: []PoolRange{{Pool: "p", First: netip.MustParseAddr("192.0.2.9"), Last: netip.MustParseAddr("192.0.2.1")}}},
			"ranges[0]"},
		{"range pool", Desired{Ranges: []PoolRange{{First: netip.MustParseAddr("192.0.2.1"), Last: netip.MustParseAddr("192.0.2.1")}}},
			"ranges[0].pool"},
	}
	for _, tt := range tests {
		err := tt.d.Validate()
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: Validate() = %v, want error containing %q", tt.name, err, tt.err)
		}
	}
}

func TestDesiredWants(t *testing.T) {
	a := netip.MustParseAddr
	d := Desired{
		VIPs: []VIP{
			{Addr: a("192.0.2.10"), Services: []string{"ns/web"}},
			{Addr: a("192.0.2.10"), Services: []string{"ns/api"}}, // shared IP listed twice
			{Addr: a("192.0.2.20"), Services: []string{"ns/db"}},
			{Addr: a("203.0.113.7"), Services: []string{"ns/odd"}}, // outside every range
			{Addr: a("2001:db8::5"), Services: []string{"ns/web"}},
		},
		Ranges: []PoolRange{
			{Pool: "blue", First: a("192.0.2.8"), Last: a("192.0.2.23")},
			{Pool: "green", First: a("198.51.100.0"), Last: a("198.51.100.255")}, // no VIP in it
			{Pool: "v6", First: a("2001:db8::"), Last: a("2001:db8::ff")},
		},
	}
	n, err := normalize(d)
	if err != nil {
		t.Fatal(err)
	}
	render := func(ws []Want) string {
		var s []string
		for _, w := range ws {
			s = append(s, FormatCIDR(w.Prefix)+" "+w.Comment)
		}
		return strings.Join(s, "; ")
	}
	if got, wantS := render(n.wants(n.vips, false)),
		"192.0.2.10 pvelb: ns/api,ns/web; 192.0.2.20 pvelb: ns/db; 203.0.113.7 pvelb: ns/odd; 2001:db8::5 pvelb: ns/web"; got != wantS {
		t.Errorf("per-VIP wants:\n got %s\nwant %s", got, wantS)
	}
	if got, wantS := render(n.wants(n.vips, true)),
		"203.0.113.7 pvelb: ns/odd; 192.0.2.8/29 pvelb: pool blue; 192.0.2.16/29 pvelb: pool blue; 2001:db8::/120 pvelb: pool v6"; got != wantS {
		t.Errorf("admit-ranges wants:\n got %s\nwant %s", got, wantS)
	}
	// A VM with only the IPv6 VIP gets only the IPv6 range.
	if got, wantS := render(n.wants([]netip.Addr{a("2001:db8::5")}, true)), "2001:db8::/120 pvelb: pool v6"; got != wantS {
		t.Errorf("admit-ranges wants for one VIP: got %s, want %s", got, wantS)
	}
	if got := n.services([]netip.Addr{a("192.0.2.10"), a("2001:db8::5")}); strings.Join(got, ",") != "ns/api,ns/web" {
		t.Errorf("services = %v", got)
	}
}
