package membership

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/test/waitfor"
)

var testSecret = []byte("0123456789abcdef-shared-secret")

func TestMessageRoundTripAndRejections(t *testing.T) {
	now := time.Unix(1700000000, 123)
	msg := message{Kind: Leaving, Incarnation: 7, Seq: 42, Time: now, Electable: true, Node: "talos-w1",
		Entries:    []entry{{Hash: nameHash("talos-w2"), Flags: entryHeard | entryVouch}, {Hash: nameHash("talos-w3")}},
		Unservable: []uint32{nameHash("side"), nameHash("")}}
	b, err := msg.marshal(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := unmarshal(b, testSecret)
	if err != nil || got.Kind != Leaving || got.Incarnation != 7 || got.Seq != 42 || !got.Time.Equal(now) ||
		got.Node != "talos-w1" || !got.Electable || !slices.Equal(got.Entries, msg.Entries) || !slices.Equal(got.Unservable, msg.Unservable) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	flip := func(i int) []byte { c := slices.Clone(b); c[i] ^= 1; return c }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"wrong secret", b, errBadAuth}, // checked with another secret below
		{"flipped seq bit", flip(20), errBadAuth},
		{"flipped name byte", flip(headerLen), errBadAuth},
		{"flipped mac byte", flip(len(b) - 1), errBadAuth},
		{"truncated", b[:len(b)-1], errBadAuth},
		{"too short", b[:10], errMalformed},
		{"bad magic", append([]byte("XXXX"), b[4:]...), errMalformed},
		{"empty", nil, errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := testSecret
			if tt.name == "wrong secret" {
				secret = []byte("another-secret-of-16+bytes")
			}
			if _, err := unmarshal(tt.b, secret); !errors.Is(err, tt.want) {
				t.Fatalf("unmarshal error %v, want %v", err, tt.want)
			}
		})
	}
	// Authentic but unknown kind: malformed, not accepted.
	bad, _ := message{Kind: 9, Incarnation: 1, Seq: 1, Time: now, Node: "n"}.marshal(testSecret)
	if _, err := unmarshal(bad, testSecret); !errors.Is(err, errMalformed) {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, err := (message{Kind: Heartbeat, Node: strings.Repeat("a", 254)}).marshal(testSecret); err == nil {
		t.Fatal("a 254-byte node name was encoded")
	}
}

func TestHandleReplayStaleUnknown(t *testing.T) {
	m := newTestMember(t, "n1", testSecret, Config{})
	m.SetPeers(map[string]Peer{"n2": {Addr: netip.MustParseAddrPort("127.0.0.1:9"), Voter: true}})
	now := time.Now()
	enc := func(kind Kind, inc, seq uint64, ts time.Time, node string) []byte {
		b, err := message{Kind: kind, Incarnation: inc, Seq: seq, Time: ts, Node: node}.marshal(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	steps := []struct {
		name      string
		b         []byte
		want      string
		wantAlive bool
	}{
		{"first heartbeat", enc(Heartbeat, 10, 1, now, "n2"), resultOK, true},
		{"same message again", enc(Heartbeat, 10, 1, now, "n2"), resultReplay, true},
		{"older seq", enc(Heartbeat, 10, 0, now, "n2"), resultReplay, true},
		{"older incarnation", enc(Heartbeat, 9, 99, now, "n2"), resultReplay, true},
		{"too old", enc(Heartbeat, 10, 5, now.Add(-6*time.Second), "n2"), resultStale, true},
		{"from the future", enc(Heartbeat, 10, 5, now.Add(6*time.Second), "n2"), resultStale, true},
		{"unknown node", enc(Heartbeat, 10, 5, now, "n7"), resultUnknownPeer, true},
		{"own name", enc(Heartbeat, 10, 5, now, "n1"), resultUnknownPeer, true},
		{"leaving", enc(Leaving, 10, 6, now, "n2"), resultOK, false},
		{"replayed heartbeat after leaving", enc(Heartbeat, 10, 5, now, "n2"), resultReplay, false},
		{"restart: new incarnation", enc(Heartbeat, 11, 1, now, "n2"), resultOK, true},
		{"restarting in place", enc(Restarting, 11, 2, now, "n2"), resultOK, false},
		{"back under a new incarnation", enc(Heartbeat, 12, 1, now, "n2"), resultOK, true},
	}
	// (Reservation ends are covered by TestRestartInPlaceKeepsItsVIPs and
	// TestReservationEndsOnlyWhenConnected.)
	for _, s := range steps {
		if got := m.handle(s.b, now); got != s.want {
			t.Fatalf("%s: result %s, want %s", s.name, got, s.want)
		}
		if got := m.Heard("n2"); got != s.wantAlive {
			t.Fatalf("%s: n2 heard=%v, want %v", s.name, got, s.wantAlive)
		}
	}
	m.lastTick = now
	m.tick(now.Add(DefaultDeadAfter - time.Millisecond))
	if !m.Heard("n2") {
		t.Fatal("n2 expired before DeadAfter")
	}
	m.tick(now.Add(DefaultDeadAfter + time.Millisecond))
	if m.Heard("n2") {
		t.Fatal("n2 heard after DeadAfter of silence")
	}
}

func TestConfigAndSecretErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("tooshort\n"), 0o600)
	good := filepath.Join(dir, "good")
	_ = os.WriteFile(good, []byte("0123456789abcdefXYZ\n"), 0o600)
	two := filepath.Join(dir, "two")
	_ = os.WriteFile(two, []byte("0123456789abcdefXYZ\r\n\nsecond-secret-0123456789\n"), 0o600)
	shortSecond := filepath.Join(dir, "short-second")
	_ = os.WriteFile(shortSecond, []byte("0123456789abcdefXYZ\ntooshort\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n\n"), 0o600)
	for _, f := range []string{short, shortSecond, empty} {
		if _, err := LoadSecrets(f); err == nil || strings.Contains(err.Error(), "tooshort") {
			t.Fatalf("%s: %v (must fail without showing the secret)", f, err)
		}
	}
	if b, err := LoadSecrets(good); err != nil || len(b) != 1 || string(b[0]) != "0123456789abcdefXYZ" {
		t.Fatalf("LoadSecrets = %q, %v", b, err)
	}
	if b, err := LoadSecrets(two); err != nil || len(b) != 2 || string(b[0]) != "0123456789abcdefXYZ" || string(b[1]) != "second-secret-0123456789" {
		t.Fatalf("LoadSecrets(two lines) = %q, %v", b, err)
	}
	if _, err := LoadSecrets(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing secret file accepted")
	}
	for _, c := range []Config{
		{Node: "", Listen: "127.0.0.1:0", Secrets: [][]byte{testSecret}},
		{Node: "n", Listen: "127.0.0.1:0", Secrets: [][]byte{[]byte("short")}},
		{Node: "n", Listen: "127.0.0.1:0", Secrets: [][]byte{testSecret, []byte("short")}},
		{Node: "n", Listen: "127.0.0.1:0"},
		{Node: "n", Listen: "127.0.0.1:0", Secrets: [][]byte{testSecret}, Interval: time.Second, DeadAfter: time.Second},
		{Node: "n", Listen: "not an address", Secrets: [][]byte{testSecret}},
	} {
		if m, err := New(c); err == nil {
			m.conn.Close()
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func newTestMember(t *testing.T, name string, secret []byte, cfg Config) *Membership {
	t.Helper()
	cfg.Node = name
	if cfg.Secrets == nil {
		cfg.Secrets = [][]byte{secret}
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.conn.Close() })
	return m
}

// cluster runs members on loopback, each knowing all others.
type cluster struct {
	members map[string]*Membership
	cancel  map[string]context.CancelFunc
	done    map[string]chan struct{}
}

func startCluster(t *testing.T, secrets map[string][]byte) *cluster {
	t.Helper()
	c := &cluster{members: map[string]*Membership{}, cancel: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
	addrs := map[string]Peer{}
	for name, s := range secrets {
		m := newTestMember(t, name, s, Config{})
		c.members[name] = m
		addrs[name] = Peer{Addr: m.LocalAddr(), Voter: true}
	}
	for name, m := range c.members {
		m.SetPeers(addrs)
		c.run(t, name)
	}
	return c
}

func (c *cluster) run(t *testing.T, name string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.cancel[name], c.done[name] = cancel, done
	m := c.members[name]
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// rejoin replaces name by a new incarnation on the same address, knowing
// every member; it does not run it yet.
func (c *cluster) rejoin(t *testing.T, name string, addr netip.AddrPort) *Membership {
	t.Helper()
	m := newTestMember(t, name, testSecret, Config{Listen: addr.String()})
	c.members[name] = m
	peers := map[string]Peer{}
	for n, o := range c.members {
		peers[n] = Peer{Addr: o.LocalAddr(), Voter: true}
	}
	m.SetPeers(peers)
	return m
}

func (c *cluster) stop(name string) {
	c.cancel[name]()
	<-c.done[name]
}

func TestMembersSeeEachOtherAndDetectFailure(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "n3": testSecret})
	all := []string{"n1", "n2", "n3"}
	for _, name := range all {
		m := c.members[name]
		waitfor.Until(t, 2*time.Second, name+" sees everyone", func() bool { return slices.Equal(m.ElectableNodes(), all) })
	}
	if v := testutil.ToFloat64(c.members["n1"].metrics.peersAlive); v != 2 {
		t.Fatalf("peers_alive gauge = %v, want 2", v)
	}

	// n3 dies without a word (SIGKILL): the others notice within DeadAfter
	// plus one expiry tick (and scheduling slack on a busy machine).
	c.stop("n3")
	stopped := time.Now()
	m1 := c.members["n1"]
	select {
	case <-m1.Changes(): // drain a stale signal
	default:
	}
	waitfor.Until(t, 2*time.Second, "n1 notices n3's death", func() bool { return !m1.Electable("n3") })
	if d := time.Since(stopped); d > 600*time.Millisecond {
		t.Errorf("death of n3 detected after %s, want < 600ms (DeadAfter %s)", d, DefaultDeadAfter)
	}
	if d := time.Since(stopped); d < DefaultDeadAfter-DefaultInterval {
		t.Errorf("death of n3 detected after only %s: faster than DeadAfter means a live node could flap", d)
	}
	select {
	case <-m1.Changes():
	case <-time.After(time.Second):
		t.Error("no change signal for n3's death")
	}
	if !slices.Equal(m1.ElectableNodes(), []string{"n1", "n2"}) {
		t.Errorf("n1 sees %v", m1.ElectableNodes())
	}

	// n3 restarts (new incarnation on the same address): alive again.
	c.rejoin(t, "n3", c.members["n3"].LocalAddr())
	c.run(t, "n3")
	waitfor.Until(t, 2*time.Second, "n1 sees restarted n3", func() bool { return m1.Electable("n3") })
}

// TestViewNamesWhoDoesNotHearWhom: the status view shows, per peer, both
// directions, so a one-way partition is visible from either end.
func TestViewNamesWhoDoesNotHearWhom(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "n3": testSecret})
	m1, m3 := c.members["n1"], c.members["n3"]
	waitfor.Until(t, 2*time.Second, "n1 sees everyone", func() bool { return len(m1.ElectableNodes()) == 3 })
	v := m1.View()
	if v.Node != "n1" || !v.Quorum || !v.MayAnswer || len(v.Peers) != 2 || v.Peers[0].Name != "n2" {
		t.Fatalf("view %+v", v)
	}
	for _, p := range v.Peers {
		if !p.Heard || !p.HearsUs || !p.Electable || p.LastHeard == "" {
			t.Errorf("healthy peer %+v", p)
		}
	}
	// n3 stops without a word: n1 no longer hears it.
	c.stop("n3")
	waitfor.Until(t, 2*time.Second, "n1 no longer hears n3", func() bool {
		p := m1.View().Peers[1]
		return p.Name == "n3" && !p.Heard && !p.HearsUs && !p.Electable
	})
	if v := m3.View(); v.MayAnswer {
		t.Errorf("stopped n3 may answer: %+v", v)
	}
}

func TestLeaveIsImmediate(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret})
	m1, m2 := c.members["n1"], c.members["n2"]
	waitfor.Until(t, 2*time.Second, "n1 sees n2", func() bool { return m1.Electable("n2") })
	start := time.Now()
	m2.Leave()
	if m2.Electable("n2") || m2.MayAnswer() {
		t.Error("a leaving node still counts itself electable")
	}
	d := waitfor.Until(t, time.Second, "n1 sees n2 leave", func() bool { return !m1.Electable("n2") })
	if d > 50*time.Millisecond {
		t.Errorf("leave seen after %s, want well under one heartbeat interval", time.Since(start))
	}
	// No heartbeat after Leave revives it.
	time.Sleep(3 * DefaultInterval)
	if m1.Electable("n2") {
		t.Error("n2 electable again after leaving")
	}
	// Of two voters, the one with the smaller name keeps answering alone.
	if !m1.Electable("n1") || !m1.MayAnswer() {
		t.Error("n1 stepped down although it holds half the voters and the smallest name")
	}
}

// TestRestartInPlaceKeepsItsVIPs: a member that says it restarts stays
// electable in its peers' views through its silence and its successor's
// hold-down, so its VIPs never move; it stops answering before it says so.
func TestRestartInPlaceKeepsItsVIPs(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "n3": testSecret})
	m1, m3 := c.members["n1"], c.members["n3"]
	waitfor.Until(t, 2*time.Second, "n1 sees everyone", func() bool { return len(m1.ElectableNodes()) == 3 })
	m3.Restart()
	if m3.MayAnswer() || m3.Electable("n3") {
		t.Fatal("a restarting member may still answer")
	}
	addr := m3.LocalAddr()
	c.stop("n3")
	stopped := time.Now()
	if v := testutil.ToFloat64(m1.metrics.peersRestarting); v != 1 {
		t.Errorf("peers_restarting gauge = %v, want 1", v)
	}
	// Away for more than DeadAfter, then back under a new incarnation that
	// holds down before it may answer: n3 must stay electable for n1 all
	// along, or its VIPs would move away and back.
	for time.Since(stopped) < 3*DefaultDeadAfter {
		if !m1.Electable("n3") {
			t.Fatalf("%s after n3 said it restarts, n1 no longer elects it", time.Since(stopped))
		}
		time.Sleep(2 * time.Millisecond)
	}
	m3 = c.rejoin(t, "n3", addr)
	c.run(t, "n3")
	for !m3.MayAnswer() {
		if !m1.Electable("n3") {
			t.Fatal("n1 dropped n3 while it was coming back")
		}
		if time.Since(stopped) > 5*time.Second {
			t.Fatal("restarted n3 never may answer")
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitfor.Until(t, time.Second, "n1 ends the reservation", func() bool {
		return testutil.ToFloat64(m1.metrics.peersRestarting) == 0
	})
	if !m1.Electable("n3") {
		t.Error("n1 does not elect n3 once it is back")
	}
}

// TestReservationEndsOnlyWhenConnected: a restarted peer that says it is
// electable but does not hear this node yet stays reserved here, so it
// never drops out of this node's electable set on its way back.
func TestReservationEndsOnlyWhenConnected(t *testing.T) {
	m := newTestMember(t, "n1", testSecret, Config{})
	m.SetPeers(map[string]Peer{"n2": {Addr: netip.MustParseAddrPort("127.0.0.1:9"), Voter: true}})
	now := time.Now()
	send := func(kind Kind, inc, seq uint64, electable bool, hearsUs bool) {
		t.Helper()
		msg := message{Kind: kind, Incarnation: inc, Seq: seq, Time: now, Node: "n2", Electable: electable}
		if hearsUs {
			msg.Entries = []entry{{Hash: nameHash("n1"), Flags: entryHeard}}
		}
		b, err := msg.marshal(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.handle(b, now); got != resultOK {
			t.Fatalf("handle: %s", got)
		}
	}
	send(Restarting, 1, 1, false, true)
	steps := []struct {
		name      string
		electable bool
		hearsUs   bool
		want      bool
	}{
		{"back, held down", false, true, true},
		{"electable, not hearing us yet", true, false, true},
		{"electable and connected", true, true, false},
	}
	for i, s := range steps {
		send(Heartbeat, 2, uint64(i+1), s.electable, s.hearsUs)
		m.mu.Lock()
		reserved := !m.peers["n2"].reservedUntil.IsZero()
		m.mu.Unlock()
		if reserved != s.want {
			t.Errorf("%s: reserved %v, want %v", s.name, reserved, s.want)
		}
		if !m.Electable("n2") {
			t.Errorf("%s: n2 not electable for n1", s.name)
		}
	}
}

// TestRestartingNodeReportedNotReady: a node the API reports NotReady while
// it restarts went down with its host (a reboot): its VIPs move at once,
// not at the end of the grace.
func TestRestartingNodeReportedNotReady(t *testing.T) {
	m := newTestMember(t, "n1", testSecret, Config{})
	addr := netip.MustParseAddrPort("127.0.0.1:9")
	m.SetPeers(map[string]Peer{"n2": {Addr: addr, Voter: true}, "n3": {Addr: addr, Voter: true}})
	b, err := message{Kind: Restarting, Incarnation: 1, Seq: 1, Time: time.Now(), Node: "n2"}.marshal(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.handle(b, time.Now()); got != resultOK {
		t.Fatalf("handle: %s", got)
	}
	if !m.Electable("n2") {
		t.Fatal("n2 not kept elected after Restarting")
	}
	m.SetPeers(map[string]Peer{"n2": {Addr: addr, Voter: false}, "n3": {Addr: addr, Voter: true}})
	if m.Electable("n2") {
		t.Error("a restarting node reported NotReady is still elected")
	}
}

// TestRestartGraceRunsOut: a member that said it restarts and does not come
// back within the grace loses its VIPs then, not at DeadAfter; a negative
// grace treats Restarting as Leaving.
func TestRestartGraceRunsOut(t *testing.T) {
	for _, tt := range []struct {
		grace time.Duration
		min   time.Duration
		max   time.Duration
	}{
		{grace: 500 * time.Millisecond, min: 450 * time.Millisecond, max: 900 * time.Millisecond},
		{grace: -1, min: 0, max: 50 * time.Millisecond},
	} {
		t.Run(tt.grace.String(), func(t *testing.T) {
			c := &cluster{members: map[string]*Membership{}, cancel: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
			peers := map[string]Peer{}
			for _, name := range []string{"n1", "n2", "n3"} {
				m := newTestMember(t, name, testSecret, Config{RestartGrace: tt.grace})
				c.members[name] = m
				peers[name] = Peer{Addr: m.LocalAddr(), Voter: true}
			}
			for name, m := range c.members {
				m.SetPeers(peers)
				c.run(t, name)
			}
			m1 := c.members["n1"]
			waitfor.Until(t, 2*time.Second, "n1 sees everyone", func() bool { return len(m1.ElectableNodes()) == 3 })
			c.members["n3"].Restart()
			c.stop("n3")
			d := waitfor.Until(t, 2*time.Second, "n1 gives n3 up", func() bool { return !m1.Electable("n3") })
			if d < tt.min || d > tt.max {
				t.Errorf("n3 given up after %s, want %s-%s", d.Round(time.Millisecond), tt.min, tt.max)
			}
		})
	}
}

func TestWrongSecretCannotJoin(t *testing.T) {
	wrong := []byte("this-is-not-the-cluster-secret")
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "intruder": wrong})
	m1, intr := c.members["n1"], c.members["intruder"]
	waitfor.Until(t, 2*time.Second, "n1 sees n2", func() bool { return m1.Electable("n2") })
	badAuth := m1.metrics.received.WithLabelValues(resultBadAuth)
	waitfor.Until(t, 2*time.Second, "bad_auth counted", func() bool { return testutil.ToFloat64(badAuth) >= 3 })
	time.Sleep(3 * DefaultInterval)
	if m1.Heard("intruder") || c.members["n2"].Heard("intruder") || m1.Electable("intruder") {
		t.Fatal("a node with the wrong secret was accepted")
	}
	// It hears nobody, so it is in a minority of one and steps down rather
	// than claiming every VIP.
	if got := intr.ElectableNodes(); len(got) != 0 || intr.MayAnswer() {
		t.Fatalf("the intruder considers %v electable (may answer: %v)", got, intr.MayAnswer())
	}
	// Even a perfect copy of a legitimate heartbeat replayed by a third
	// party does not help: the sequence number was already seen.
	raw, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	m2 := c.members["n2"]
	peers := map[string]Peer{"n1": {Addr: m1.LocalAddr(), Voter: true}, "spy": {Addr: raw.LocalAddr().(*net.UDPAddr).AddrPort()}}
	m2.SetPeers(peers) // n2 now also heartbeats to the spy socket
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, maxMessageLen)
	n, _, err := raw.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	replay := m1.metrics.received.WithLabelValues(resultReplay)
	before := testutil.ToFloat64(replay)
	if _, err := raw.WriteToUDPAddrPort(buf[:n], m1.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, time.Second, "replay counted", func() bool { return testutil.ToFloat64(replay) > before })
}

// TestOneWayPartitionStepsDown: n1 receives nothing (its peers send to a
// dead address, as when a VM firewall drops inbound UDP to the membership
// port) while its own heartbeats still arrive. n1 must not claim: it has no
// quorum; the others must not count on it: it does not hear them.
func TestOneWayPartitionStepsDown(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "n3": testSecret})
	m1, m2, m3 := c.members["n1"], c.members["n2"], c.members["n3"]
	waitfor.Until(t, 2*time.Second, "all electable", func() bool {
		return len(m1.ElectableNodes()) == 3 && len(m2.ElectableNodes()) == 3 && len(m3.ElectableNodes()) == 3
	})
	black, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer black.Close()
	blackhole := black.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, m := range []*Membership{m2, m3} {
		peers := map[string]Peer{"n1": {Addr: blackhole, Voter: true}}
		for name, o := range c.members {
			if name != "n1" {
				peers[name] = Peer{Addr: o.LocalAddr(), Voter: true}
			}
		}
		m.SetPeers(peers)
	}
	waitfor.Until(t, 2*time.Second, "n1 steps down", func() bool { return !m1.MayAnswer() && len(m1.ElectableNodes()) == 0 })
	waitfor.Until(t, 2*time.Second, "n2 and n3 drop n1", func() bool {
		return slices.Equal(m2.ElectableNodes(), []string{"n2", "n3"}) && slices.Equal(m3.ElectableNodes(), []string{"n2", "n3"})
	})
	// While it lasts, n1 never claims again and the others never count on it.
	for range 20 {
		if m1.MayAnswer() || m2.Electable("n1") || m3.Electable("n1") || !m2.MayAnswer() {
			t.Fatalf("during the partition: n1 may answer %v, n2 sees %v, n3 sees %v", m1.MayAnswer(), m2.ElectableNodes(), m3.ElectableNodes())
		}
		time.Sleep(DefaultInterval / 2)
	}
	if v := testutil.ToFloat64(m1.metrics.quorum); v != 0 {
		t.Errorf("n1 quorum gauge %v, want 0", v)
	}
}

// TestRestartHoldsDown: a restarted member claims nothing before it has heard
// its peers; with DeadAfter it would otherwise start out alone and win all.
func TestRestartHoldsDown(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "n3": testSecret})
	m1 := c.members["n1"]
	waitfor.Until(t, 2*time.Second, "n1 sees everyone", func() bool { return len(m1.ElectableNodes()) == 3 })
	addr := c.members["n3"].LocalAddr()
	c.stop("n3")
	m3 := c.rejoin(t, "n3", addr)
	if m3.MayAnswer() || m3.Electable("n3") {
		t.Fatal("a member that has not run yet may answer")
	}
	start := time.Now()
	c.run(t, "n3")
	// Sample its own verdict from the first instant: never alone.
	for time.Since(start) < DefaultDeadAfter {
		if e := m3.ElectableNodes(); slices.Contains(e, "n3") && len(e) < 3 {
			t.Fatalf("%s after start n3 claims with only %v electable", time.Since(start), e)
		}
		time.Sleep(time.Millisecond)
	}
	d := waitfor.Until(t, 2*time.Second, "n3 electable everywhere", func() bool {
		return m3.MayAnswer() && m1.Electable("n3") && len(m3.ElectableNodes()) == 3
	})
	t.Logf("restarted n3 electable after %s", time.Since(start).Round(time.Millisecond))
	_ = d
}

// TestStallClosesTheFence: a process frozen longer than its peers tolerate
// (SIGSTOP, a paused VM) finds MayAnswer false on waking, before its tick
// loop ran, and stays silent until it has heard its peers again.
func TestStallClosesTheFence(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret})
	m1 := c.members["n1"]
	waitfor.Until(t, 2*time.Second, "n1 may answer", m1.MayAnswer)
	// Freeze n1's loops: stop it without Leave, as a frozen process looks.
	c.stop("n1")
	time.Sleep(DefaultDeadAfter)
	if m1.MayAnswer() {
		t.Fatal("the fence stayed open without ticks")
	}
	// Waking, the receive loop may run before the tick loop: a queued
	// heartbeat from n2 (which still lists n1) must not reopen the fence.
	m1.mu.Lock()
	m1.lastTick = time.Now().Add(-time.Second)
	m1.mu.Unlock()
	queued, _ := message{Kind: Heartbeat, Incarnation: uint64(time.Now().UnixNano()), Seq: 1, Time: time.Now(),
		Electable: true, Node: "n2", Entries: []entry{{Hash: nameHash("n1"), Flags: entryHeard | entryVouch}}}.marshal(testSecret)
	if r := m1.handle(queued, time.Now()); r != resultOK {
		t.Fatalf("queued heartbeat: %s", r)
	}
	if m1.MayAnswer() || m1.Electable("n1") {
		t.Fatal("n1 may answer right after a stall")
	}
	m1.tick(time.Now())
	if m1.MayAnswer() {
		t.Fatal("n1 may answer right after a stall (tick)")
	}
	if v := testutil.ToFloat64(m1.metrics.stalls); v != 1 {
		t.Fatalf("stalls counted %v, want 1", v)
	}
}

// TestSecretRotation: the rotation steps of LoadSecrets keep every pair of
// neighbouring steps talking, and only those.
func TestSecretRotation(t *testing.T) {
	oldS, newS := []byte("old-secret-0123456789"), []byte("new-secret-0123456789")
	steps := [][][]byte{{oldS}, {oldS, newS}, {newS, oldS}, {newS}}
	for i := 0; i+1 < len(steps); i++ {
		a := newTestMember(t, "a", nil, Config{Secrets: steps[i]})
		b := newTestMember(t, "b", nil, Config{Secrets: steps[i+1]})
		msgA, _ := message{Kind: Heartbeat, Incarnation: 1, Seq: 1, Time: time.Now(), Node: "a"}.marshal(steps[i][0])
		msgB, _ := message{Kind: Heartbeat, Incarnation: 1, Seq: 1, Time: time.Now(), Node: "b"}.marshal(steps[i+1][0])
		a.SetPeers(map[string]Peer{"b": {Voter: true}})
		b.SetPeers(map[string]Peer{"a": {Voter: true}})
		if r := b.handle(msgA, time.Now()); r != resultOK {
			t.Errorf("step %d to %d: b refused a's heartbeat: %s", i, i+1, r)
		}
		if r := a.handle(msgB, time.Now()); r != resultOK {
			t.Errorf("step %d to %d: a refused b's heartbeat: %s", i, i+1, r)
		}
	}
	// Skipping a step splits: old alone and new alone do not talk.
	a := newTestMember(t, "a", nil, Config{Secrets: [][]byte{oldS}})
	a.SetPeers(map[string]Peer{"b": {Voter: true}})
	msg, _ := message{Kind: Heartbeat, Incarnation: 1, Seq: 1, Time: time.Now(), Node: "b"}.marshal(newS)
	if r := a.handle(msg, time.Now()); r != resultBadAuth {
		t.Errorf("old-only accepted a new-only heartbeat: %s", r)
	}
	if err := a.SetSecrets([][]byte{oldS, newS}); err != nil {
		t.Fatal(err)
	}
	msg, _ = message{Kind: Heartbeat, Incarnation: 1, Seq: 2, Time: time.Now(), Node: "b"}.marshal(newS)
	if r := a.handle(msg, time.Now()); r != resultOK {
		t.Errorf("after SetSecrets: %s", r)
	}
	if err := a.SetSecrets([][]byte{[]byte("short")}); err == nil {
		t.Error("SetSecrets accepted a short secret")
	}
}

// TestUnservableIsReported: what a node says it cannot serve reaches its
// peers within a heartbeat, so their elections leave it out.
func TestUnservableIsReported(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret})
	m1, m2 := c.members["n1"], c.members["n2"]
	waitfor.Until(t, 2*time.Second, "n2 sees n1", func() bool { return m2.Electable("n1") })
	select {
	case <-m2.Changes():
	default:
	}
	m1.SetUnservable([]string{"side", "side"})
	if m1.CanServe("n1", "side") || !m1.CanServe("n1", "main") {
		t.Fatal("n1's own view of what it serves is wrong")
	}
	d := waitfor.Until(t, time.Second, "n2 learns n1 cannot serve pool side", func() bool { return !m2.CanServe("n1", "side") })
	if d > 50*time.Millisecond {
		t.Errorf("learnt after %s, want a heartbeat out of turn", d)
	}
	if !m2.CanServe("n1", "main") || !m2.CanServe("ghost", "side") {
		t.Error("CanServe refuses what was not reported")
	}
	select {
	case <-m2.Changes():
	case <-time.After(time.Second):
		t.Error("no change signal for a peer's unservable list")
	}
	m1.SetUnservable(nil)
	waitfor.Until(t, time.Second, "n2 learns n1 can serve again", func() bool { return m2.CanServe("n1", "side") })
}
