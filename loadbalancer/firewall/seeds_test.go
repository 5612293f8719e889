package firewall

import (
	"net/netip"
	"slices"
	"testing"
)

func TestSeedAddrs(t *testing.T) {
	node := addrs("192.0.2.10")
	tests := []struct {
		name string
		f    NICFacts
		want []netip.Addr
	}{
		{"no facts: the Node's addresses", NICFacts{}, addrs("192.0.2.10")},
		{"static ip6 kept beside the Node's IPv4", NICFacts{IPConfig: addrs("2001:db8::10")}, addrs("192.0.2.10", "2001:db8::10")},
		{"agent knows the NIC: its addresses, not the Node's", NICFacts{AgentKnows: true, Agent: addrs("198.51.100.7", "fe80::1")}, addrs("198.51.100.7")},
		{"agent knows the NIC, which has no address", NICFacts{AgentKnows: true}, nil},
		{"agent and cloud-init", NICFacts{AgentKnows: true, Agent: addrs("192.0.2.10"), IPConfig: addrs("192.0.2.10", "2001:db8::10")}, addrs("192.0.2.10", "2001:db8::10")},
		{"4in6 unmapped, loopback dropped", NICFacts{AgentKnows: true, Agent: addrs("::ffff:192.0.2.11", "127.0.0.1", "::1")}, addrs("192.0.2.11")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SeedAddrs(node, tt.f); !slices.Equal(got, tt.want) {
				t.Fatalf("SeedAddrs = %v, want %v", got, tt.want)
			}
		})
	}
}
