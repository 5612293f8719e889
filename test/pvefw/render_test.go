package pvefw

import (
	"strings"
	"testing"

	"github.com/pvelb/pvelb/test/pvesim"
)

func ports(t *testing.T, cfg Config, st pvesim.FirewallState) []Port {
	t.Helper()
	nics, problems := Compile(st, cfg)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var out []Port
	for i, n := range nics {
		out = append(out, Port{NIC: n, Name: "pn" + string(rune('a'+i))})
	}
	return out
}

const header = `table bridge pvefw {
	chain out { type filter hook prerouting priority -10; policy accept; }
	chain in { type filter hook postrouting priority 0; policy accept; }
}
flush table bridge pvefw
`

func TestScript(t *testing.T) {
	withSet := state(true, fwvm("enable=1 ipfilter=1", set0("192.0.2.11", "2001:db8:0:1::11")))
	tests := []struct {
		name string
		cfg  Config
		st   pvesim.FirewallState
		want string // after the comment line
	}{
		{"classic", Config{Variant: Classic}, withSet, header + `add counter bridge pvefw vm100
add rule bridge pvefw out iifname "pna" ether saddr != bc:24:11:aa:bb:01 counter name "vm100" drop comment "vm100 net0: source MAC is not the NIC's"
add rule bridge pvefw out iifname "pna" arp saddr ip != { 192.0.2.11 } counter name "vm100" drop comment "vm100 net0: ARP sender not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" meta protocol ip udp sport 68 udp dport 67 accept
add rule bridge pvefw out iifname "pna" meta protocol ip6 udp sport 546 udp dport 547 accept
add rule bridge pvefw out iifname "pna" ip saddr != { 192.0.2.11 } counter name "vm100" drop comment "vm100 net0: IPv4 source not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" ip6 saddr != { 2001:db8:0:1::11, fe80::be24:11ff:feaa:bb01 } counter name "vm100" drop comment "vm100 net0: IPv6 source not in ipfilter-net0"
`},
		{"nftables", Config{Variant: Nftables, DropInboundARP: true}, withSet, header + `add counter bridge pvefw vm100
add rule bridge pvefw out iifname "pna" icmp type { destination-unreachable, source-quench, time-exceeded } accept
add rule bridge pvefw out iifname "pna" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
add rule bridge pvefw out iifname "pna" ip saddr != { 192.0.2.11 } counter name "vm100" drop comment "vm100 net0: IPv4 source not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" ip6 saddr != { 2001:db8:0:1::11 } counter name "vm100" drop comment "vm100 net0: IPv6 source not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" arp saddr ip != { 192.0.2.11 } counter name "vm100" drop comment "vm100 net0: ARP sender not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" ether saddr != bc:24:11:aa:bb:01 counter name "vm100" drop comment "vm100 net0: source MAC is not the NIC's"
add rule bridge pvefw out iifname "pna" arp saddr ether != bc:24:11:aa:bb:01 counter name "vm100" drop comment "vm100 net0: ARP sender MAC is not the NIC's"
add rule bridge pvefw in oifname "pna" arp daddr ip != { 192.0.2.11 } counter name "vm100" drop comment "vm100 net0: ARP target not in ipfilter-net0"
`},
		{"empty sets drop the whole protocol", Config{Variant: Nftables},
			state(true, fwvm("enable=1 ipfilter=1 macfilter=0", set0())), header + `add counter bridge pvefw vm100
add rule bridge pvefw out iifname "pna" icmp type { destination-unreachable, source-quench, time-exceeded } accept
add rule bridge pvefw out iifname "pna" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept
add rule bridge pvefw out iifname "pna" ether type ip counter name "vm100" drop comment "vm100 net0: IPv4 source not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" ether type ip6 counter name "vm100" drop comment "vm100 net0: IPv6 source not in ipfilter-net0"
add rule bridge pvefw out iifname "pna" ether type arp counter name "vm100" drop comment "vm100 net0: ARP sender not in ipfilter-net0"
`},
		{"a NIC that filters nothing gets no rule and no counter", Config{Variant: Classic},
			state(true, fwvm("enable=1 macfilter=0", nil)), header},
		{"datacenter firewall off: an empty table", Config{Variant: Classic},
			state(false, fwvm("enable=1 ipfilter=1", set0("192.0.2.11"))), header},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Script("pvefw", tt.cfg.Variant, ports(t, tt.cfg, tt.st))
			first, rest, _ := strings.Cut(got, "\n")
			if !strings.HasPrefix(first, "# "+tt.cfg.Variant.String()+" ") {
				t.Errorf("first line %q", first)
			}
			if rest != tt.want {
				t.Errorf("script:\n%s\nwant:\n%s", rest, tt.want)
			}
		})
	}
}

// A VM's NICs share one counter, declared once.
func TestScriptOneCounterPerVM(t *testing.T) {
	st := state(true, fwvm("enable=1", nil, nic0, "virtio=BC:24:11:AA:BB:02,bridge=vmbr0,firewall=1"))
	got := Script("t", Classic, ports(t, Config{Variant: Classic}, st))
	if n := strings.Count(got, "add counter bridge t vm100\n"); n != 1 {
		t.Errorf("%d counter declarations:\n%s", n, got)
	}
	if !strings.Contains(got, `iifname "pnb" ether saddr != bc:24:11:aa:bb:02 counter name "vm100" drop`) {
		t.Errorf("second NIC's rule missing:\n%s", got)
	}
}

func TestParseCounters(t *testing.T) {
	out := `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"counter": {"family": "bridge", "name": "vm100", "table": "pvefw", "handle": 3, "packets": 7, "bytes": 420}},
 {"counter": {"family": "bridge", "name": "vm0101", "table": "pvefw", "handle": 4, "packets": 9, "bytes": 1}},
 {"counter": {"family": "bridge", "name": "other", "table": "pvefw", "handle": 5, "packets": 9, "bytes": 1}},
 {"counter": {"family": "bridge", "name": "vm102", "table": "pvefw", "handle": 6, "packets": 0, "bytes": 0}}]}`
	got, err := parseCounters([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[100] != 7 || got[102] != 0 {
		t.Errorf("counters %v", got)
	}
	if _, err := parseCounters([]byte("not json")); err == nil {
		t.Error("no error for garbage")
	}
}
