package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/test/bird"
	"github.com/pvelb/pvelb/test/netlab"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

const (
	labASN   = 64512 // speakers and router: iBGP, so local preference travels
	birdHold = 9 * time.Second
)

var vip4 = netip.MustParsePrefix("198.51.100.10/32")

// birdPeers writes one passive BGP protocol per node: BIRD never connects,
// so every session that comes up was opened by a speaker without a listener.
func birdPeers(nodes []*netlab.Host, extra func(i int) string) string {
	var b strings.Builder
	for i, n := range nodes {
		fmt.Fprintf(&b, `protocol bgp n%d {
	local as %d; neighbor %s as %d; passive on; direct; hold time %d; %s
	ipv4 { import all; export none; gateway direct; };
}
`, i+1, labASN, n.IPv4.Addr(), labASN, int(birdHold/time.Second), extra(i))
	}
	return b.String()
}

func nodeConfig(n *netlab.Host) Config {
	return Config{RouterID: n.IPv4.Addr(), LocalASN: labASN, ListenPort: NoListen, NextHopIPv4: n.IPv4.Addr(), ConnectRetry: time.Second}
}

func routerPeer(router *netlab.Host) Peer {
	return Peer{Name: "router", Address: router.IPv4.Addr(), ASN: labASN, HoldTime: birdHold}
}

func waitEstablished(t *testing.T, b *bird.Daemon, names ...string) {
	t.Helper()
	err := bird.Eventually(20*time.Second, 100*time.Millisecond, func() error {
		st, err := b.ProtocolStates()
		if err != nil {
			return err
		}
		for _, n := range names {
			if st[n] != "Established" {
				return fmt.Errorf("BIRD protocol %s is %q, want Established", n, st[n])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitVias waits until BIRD holds exactly these next hops for p.
func waitVias(t *testing.T, b *bird.Daemon, p netip.Prefix, want ...string) []bird.Path {
	t.Helper()
	sort.Strings(want)
	var paths []bird.Path
	err := bird.Eventually(10*time.Second, 20*time.Millisecond, func() error {
		var err error
		if paths, err = b.Routes(p); err != nil {
			return err
		}
		got := bird.Vias(paths)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("BIRD next hops for %s = %v, want %v", p, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// TestBIRDECMPWithdrawAndStop: three nodes advertise one VIP to BIRD over
// outbound-only sessions; BIRD holds one path per node with the pool's
// communities and local preference and installs an ECMP route; a withdrawal,
// a graceful stop and a killed speaker each remove exactly that node's path.
func TestBIRDECMPWithdrawAndStop(t *testing.T) {
	bird.Require(t)
	lab := netlab.New(t, netlab.Options{Nodes: 3})
	router := lab.AddHost(t, "router", 1)
	b := bird.Start(t, router, birdPeers(lab.Nodes, func(int) string { return "" }))
	ctx := context.Background()

	lp := uint32(200)
	route := Route{Prefix: vip4, Communities: []string{"65000:100", "no-export", "4200000000:1:2"}, LocalPreference: &lp}
	var speakers []*speakerProc
	for _, n := range lab.Nodes {
		sp := startSpeaker(t, n, nodeConfig(n))
		if err := sp.setPeers(routerPeer(router)); err != nil {
			t.Fatal(err)
		}
		if err := sp.setRoutes(route); err != nil {
			t.Fatal(err)
		}
		speakers = append(speakers, sp)
	}
	waitEstablished(t, b, "n1", "n2", "n3")

	// Listener off: nothing listens for TCP in the node namespaces.
	for _, n := range lab.Nodes {
		out, err := n.Run(ctx, "ss", "-Hltn")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("%s: ListenPort -1 but sockets listen: %s", n.Name, out)
		}
	}

	paths := waitVias(t, b, vip4, "192.0.2.11", "192.0.2.12", "192.0.2.13")
	for _, p := range paths {
		if got := p.Attrs["BGP.local_pref"]; got != "200" {
			t.Errorf("path from %s: local_pref %q, want 200", p.Proto, got)
		}
		if got := p.Attrs["BGP.community"]; got != "(65000,100) (65535,65281)" {
			t.Errorf("path from %s: communities %q, want (65000,100) (65535,65281)", p.Proto, got)
		}
		if got := p.Attrs["BGP.large_community"]; got != "(4200000000, 1, 2)" {
			t.Errorf("path from %s: large communities %q, want (4200000000, 1, 2)", p.Proto, got)
		}
		if got := p.Attrs["BGP.next_hop"]; got != p.Via {
			t.Errorf("path from %s: BGP next hop %q, resolved via %q", p.Proto, got, p.Via)
		}
	}
	// BIRD merged the three equal paths into one multipath kernel route.
	if err := bird.Eventually(5*time.Second, 50*time.Millisecond, func() error {
		out, err := router.Run(ctx, "ip", "route", "show", vip4.String())
		if err != nil {
			return err
		}
		for _, nh := range []string{"192.0.2.11", "192.0.2.12", "192.0.2.13"} {
			if !strings.Contains(out, "nexthop via "+nh+" ") {
				return fmt.Errorf("router's kernel route %q lacks ECMP next hop %s", strings.TrimSpace(out), nh)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	st, err := speakers[0].states()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].State != StateEstablished || st[0].Address != router.IPv4.Addr() || st[0].Name != "router" || st[0].Advertised != 1 || st[0].Since.IsZero() {
		t.Errorf("PeerStates = %+v, want one established session to %s with 1 advertised route", st, router.IPv4.Addr())
	}

	// A changed attribute replaces node3's path in place.
	lp50 := uint32(50)
	if err := speakers[2].setRoutes(Route{Prefix: vip4, LocalPreference: &lp50}); err != nil {
		t.Fatal(err)
	}
	if err := bird.Eventually(10*time.Second, 20*time.Millisecond, func() error {
		paths, err := b.Routes(vip4)
		if err != nil {
			return err
		}
		for _, p := range paths {
			if p.Proto == "n3" && p.Attrs["BGP.local_pref"] == "50" && p.Attrs["BGP.community"] == "" && len(paths) == 3 {
				return nil
			}
		}
		return fmt.Errorf("node3's path not updated: %+v", paths)
	}); err != nil {
		t.Fatal(err)
	}

	// Withdrawal (the VIP is deleted or the node no longer eligible).
	if err := speakers[0].setRoutes(); err != nil {
		t.Fatal(err)
	}
	waitVias(t, b, vip4, "192.0.2.12", "192.0.2.13")
	if st, _ := b.ProtocolStates(); st["n1"] != "Established" {
		t.Errorf("withdrawing a route must keep the session; n1 is %q", st["n1"])
	}

	// Graceful stop: withdrawn first, then the session closes.
	if err := speakers[1].stop(); err != nil {
		t.Fatal(err)
	}
	waitVias(t, b, vip4, "192.0.2.13")

	// A killed speaker: the kernel closes its TCP connection and BIRD drops
	// the path without waiting for the hold timer.
	start := time.Now()
	speakers[2].kill()
	waitVias(t, b, vip4)
	if d := time.Since(start); d >= birdHold {
		t.Errorf("route withdrawn after %s, not before the %s hold time", d, birdHold)
	}
}

// TestBIRDIPv6 advertises a /128 from one node over an IPv6 session and from
// another over an IPv4 session carrying IPv6 by MP-BGP with the node's IPv6
// next hop; BIRD holds both paths.
func TestBIRDIPv6(t *testing.T) {
	bird.Require(t)
	lab := netlab.New(t, netlab.Options{Nodes: 2})
	router := lab.AddHost(t, "router", 1)
	n1, n2 := lab.Nodes[0], lab.Nodes[1]
	b := bird.Start(t, router, fmt.Sprintf(`
protocol bgp v6 { local as %[1]d; neighbor %[2]s as %[1]d; passive on; direct; ipv6 { import all; export none; gateway direct; }; }
protocol bgp mp { local as %[1]d; neighbor %[3]s as %[1]d; passive on; direct;
	ipv4 { import all; export none; gateway direct; };
	ipv6 { import all; export none; gateway direct; };
}
`, labASN, n1.IPv6.Addr(), n2.IPv4.Addr()))

	vip6 := netip.MustParsePrefix("2001:db8:0:2::10/128")
	cfg1 := Config{RouterID: n1.IPv4.Addr(), LocalASN: labASN, ListenPort: NoListen, NextHopIPv6: n1.IPv6.Addr(), ConnectRetry: time.Second}
	s1 := startSpeaker(t, n1, cfg1)
	if err := s1.setPeers(Peer{Name: "router6", Address: router.IPv6.Addr(), ASN: labASN}); err != nil {
		t.Fatal(err)
	}
	cfg2 := nodeConfig(n2)
	cfg2.NextHopIPv6 = n2.IPv6.Addr()
	s2 := startSpeaker(t, n2, cfg2)
	if err := s2.setPeers(routerPeer(router)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*speakerProc{s1, s2} {
		if err := s.setRoutes(Route{Prefix: vip6, Communities: []string{"65000:6"}}); err != nil {
			t.Fatal(err)
		}
	}
	waitEstablished(t, b, "v6", "mp")
	paths := waitVias(t, b, vip6, "2001:db8:0:1::11", "2001:db8:0:1::12")
	for _, p := range paths {
		if p.Attrs["BGP.community"] != "(65000,6)" {
			t.Errorf("path from %s: communities %q", p.Proto, p.Attrs["BGP.community"])
		}
	}
	if err := s2.setRoutes(); err != nil {
		t.Fatal(err)
	}
	waitVias(t, b, vip6, "2001:db8:0:1::11")
}

// TestBIRDPassword: a session with a wrong TCP MD5 password never comes up;
// the right one does.
func TestBIRDPassword(t *testing.T) {
	bird.Require(t)
	lab := netlab.New(t, netlab.Options{Nodes: 1})
	router := lab.AddHost(t, "router", 1)
	n := lab.Nodes[0]
	b := bird.Start(t, router, birdPeers(lab.Nodes, func(int) string { return `password "right-secret";` }))
	if st, err := b.ProtocolStates(); err == nil && strings.Contains(strings.ToLower(st["n1"]), "md5") {
		if os.Getenv("PVELB_REQUIRE_PRIVILEGED") == "1" {
			t.Fatalf("this kernel has no TCP MD5 signatures in namespaces: BIRD says %q", st["n1"])
		}
		t.Skipf("this kernel has no TCP MD5 signatures in namespaces: BIRD says %q", st["n1"])
	}
	sp := startSpeaker(t, n, nodeConfig(n))
	p := routerPeer(router)
	p.Password = "wrong-secret"
	if err := sp.setPeers(p); err != nil {
		t.Fatal(err)
	}
	if err := sp.setRoutes(Route{Prefix: vip4}); err != nil {
		t.Fatal(err)
	}
	// Several connection attempts (ConnectRetry is 1s) must all fail.
	for i := 0; i < 40; i++ {
		st, err := b.ProtocolStates()
		if err != nil {
			t.Fatal(err)
		}
		if st["n1"] == "Established" {
			t.Fatal("session established with a wrong MD5 password")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if paths, _ := b.Routes(vip4); len(paths) != 0 {
		t.Fatalf("BIRD learned %v over an unauthenticated session", bird.Vias(paths))
	}
	p.Password = "right-secret"
	if err := sp.setPeers(p); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, b, "n1")
	waitVias(t, b, vip4, "192.0.2.11")
	// Neither password reached the speaker's log (gobgp's included).
	logText, err := os.ReadFile(sp.log)
	if err != nil {
		t.Fatal(err)
	}
	if len(logText) == 0 || strings.Contains(string(logText), "right-secret") || strings.Contains(string(logText), "wrong-secret") {
		t.Fatalf("speaker log is empty or reveals a password:\n%s", logText)
	}
}

// TestBIRDReconcileEBGP drives the controller's entry point: BGPPeer specs
// and pool settings go in, an eBGP session with the BGPPeer's myASN (not the
// speaker's global ASN) comes up, graceful restart is negotiated (BIRD keeps
// a killed node's path as stale), and an empty desired state withdraws.
func TestBIRDReconcileEBGP(t *testing.T) {
	bird.Require(t)
	const routerASN, nodeASN, globalASN = 64500, 64512, 65001
	lab := netlab.New(t, netlab.Options{Nodes: 2})
	router := lab.AddHost(t, "router", 1)
	var cfg strings.Builder
	for i, n := range lab.Nodes {
		fmt.Fprintf(&cfg, `protocol bgp n%d { local as %d; neighbor %s as %d; passive on; hold time 9; graceful restart on;
	ipv4 { import all; export none; };
}
`, i+1, routerASN, n.IPv4.Addr(), nodeASN)
	}
	b := bird.Start(t, router, cfg.String())

	vip := netip.MustParseAddr("198.51.100.20")
	lp := uint32(300) // eBGP: not sent, BIRD must not show it
	pool := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{Announce: v1alpha1.Announce{
		Mode: v1alpha1.AnnounceBGP, Communities: []string{"64512:7", "no-advertise"}, LocalPreference: &lp}}}
	peer := PeerInput{Name: "tor", Spec: v1alpha1.BGPPeerSpec{
		PeerAddress: router.IPv4.Addr().String(), PeerASN: routerASN, MyASN: nodeASN, PeerPort: 179,
		HoldTime:        metav1.Duration{Duration: 9 * time.Second},
		GracefulRestart: &v1alpha1.GracefulRestart{Enabled: true, RestartTime: &metav1.Duration{Duration: 60 * time.Second}},
	}}
	var speakers []*speakerProc
	for _, n := range lab.Nodes {
		c := nodeConfig(n)
		c.LocalASN = globalASN
		sp := startSpeaker(t, n, c)
		if err := sp.reconcile(Desired{Peers: []PeerInput{peer}, VIPs: []VIP{desired.VIPFromPool(vip, pool)}}); err != nil {
			t.Fatal(err)
		}
		speakers = append(speakers, sp)
	}
	waitEstablished(t, b, "n1", "n2")
	prefix := netip.PrefixFrom(vip, 32)
	for _, p := range waitVias(t, b, prefix, "192.0.2.11", "192.0.2.12") {
		if p.Attrs["BGP.as_path"] != "64512" {
			t.Errorf("path from %s: AS path %q, want 64512 (the BGPPeer's myASN)", p.Proto, p.Attrs["BGP.as_path"])
		}
		if p.Attrs["BGP.community"] != "(64512,7) (65535,65282)" {
			t.Errorf("path from %s: communities %q", p.Proto, p.Attrs["BGP.community"])
		}
	}
	m, err := speakers[0].metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`pvelb_announcer_bgp_session_up{address="192.0.2.1",peer="tor"} 1`,
		`pvelb_announcer_bgp_session_state{address="192.0.2.1",peer="tor",state="established"} 1`,
		`pvelb_announcer_bgp_routes_advertised{address="192.0.2.1",peer="tor"} 1`,
		`pvelb_announcer_bgp_routes 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}

	// Graceful restart: a killed node's path stays (stale) on BIRD.
	speakers[1].kill()
	if err := bird.Eventually(10*time.Second, 50*time.Millisecond, func() error {
		if st, _ := b.ProtocolStates(); st["n2"] == "Established" {
			return fmt.Errorf("n2 still established")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if paths, err := b.Routes(prefix); err != nil || len(paths) != 2 {
		t.Fatalf("with graceful restart BIRD must keep the killed node's path: %v %v", bird.Vias(paths), err)
	}

	// Nothing desired: the route is withdrawn and the session removed.
	if err := speakers[0].reconcile(Desired{}); err != nil {
		t.Fatal(err)
	}
	if err := bird.Eventually(10*time.Second, 50*time.Millisecond, func() error {
		paths, err := b.Routes(prefix)
		if err != nil {
			return err
		}
		for _, p := range paths {
			if p.Proto == "n1" {
				return fmt.Errorf("node1's path still on BIRD")
			}
		}
		if st, _ := b.ProtocolStates(); st["n1"] == "Established" {
			return fmt.Errorf("n1 still established after its BGPPeer was removed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
