package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorStopped(t *testing.T) {
	s, err := New(testConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.SetPeers(ctx, []Peer{{Name: "tor", Address: netip.MustParseAddr("192.0.2.1"), ASN: 64500}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRoutes(ctx, []Route{{Prefix: netip.MustParsePrefix("198.51.100.1/32")}, {Prefix: netip.MustParsePrefix("2001:db8::1/128")}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(s))
	want := `
# HELP pvelb_announcer_bgp_routes VIP routes this node originates.
# TYPE pvelb_announcer_bgp_routes gauge
pvelb_announcer_bgp_routes 2
# HELP pvelb_announcer_bgp_session_up 1 when the BGP session to the peer is established, else 0.
# TYPE pvelb_announcer_bgp_session_up gauge
pvelb_announcer_bgp_session_up{address="192.0.2.1",peer="tor"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pvelb_announcer_bgp_routes", "pvelb_announcer_bgp_session_up"); err != nil {
		t.Fatal(err)
	}
}
