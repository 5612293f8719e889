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
)

var testSecret = []byte("0123456789abcdef-shared-secret")

func TestMessageRoundTripAndRejections(t *testing.T) {
	now := time.Unix(1700000000, 123)
	msg := message{Kind: Leaving, Incarnation: 7, Seq: 42, Time: now, Node: "talos-w1"}
	b, err := msg.marshal(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := unmarshal(b, testSecret)
	if err != nil || got.Kind != Leaving || got.Incarnation != 7 || got.Seq != 42 || !got.Time.Equal(now) || got.Node != "talos-w1" {
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
	m.SetPeers(map[string]netip.AddrPort{"n2": netip.MustParseAddrPort("127.0.0.1:9")})
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
	}
	for _, s := range steps {
		if got := m.handle(s.b, now); got != s.want {
			t.Fatalf("%s: result %s, want %s", s.name, got, s.want)
		}
		if got := m.Alive("n2"); got != s.wantAlive {
			t.Fatalf("%s: n2 alive=%v, want %v", s.name, got, s.wantAlive)
		}
	}
	m.expire(now.Add(DefaultDeadAfter - time.Millisecond))
	if !m.Alive("n2") {
		t.Fatal("n2 expired before DeadAfter")
	}
	m.expire(now.Add(DefaultDeadAfter + time.Millisecond))
	if m.Alive("n2") {
		t.Fatal("n2 alive after DeadAfter of silence")
	}
}

func TestConfigAndSecretErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("tooshort\n"), 0o600)
	good := filepath.Join(dir, "good")
	_ = os.WriteFile(good, []byte("0123456789abcdefXYZ\n"), 0o600)
	if _, err := LoadSecret(short); err == nil || strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("short secret: %v (must fail without showing the secret)", err)
	}
	if b, err := LoadSecret(good); err != nil || string(b) != "0123456789abcdefXYZ" {
		t.Fatalf("LoadSecret = %q, %v", b, err)
	}
	if _, err := LoadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing secret file accepted")
	}
	for _, c := range []Config{
		{Node: "", Listen: "127.0.0.1:0", Secret: testSecret},
		{Node: "n", Listen: "127.0.0.1:0", Secret: []byte("short")},
		{Node: "n", Listen: "127.0.0.1:0", Secret: testSecret, Interval: time.Second, DeadAfter: time.Second},
		{Node: "n", Listen: "not an address", Secret: testSecret},
	} {
		if m, err := New(c); err == nil {
			m.conn.Close()
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func newTestMember(t *testing.T, name string, secret []byte, cfg Config) *Membership {
	t.Helper()
	cfg.Node, cfg.Secret = name, secret
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
	addrs := map[string]netip.AddrPort{}
	for name, s := range secrets {
		m := newTestMember(t, name, s, Config{})
		c.members[name] = m
		addrs[name] = m.LocalAddr()
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

func (c *cluster) stop(name string) {
	c.cancel[name]()
	<-c.done[name]
}

// waitFor polls until cond holds, up to limit, and returns how long it took.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not true after %s", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func TestMembersSeeEachOtherAndDetectFailure(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "n3": testSecret})
	all := []string{"n1", "n2", "n3"}
	for _, name := range all {
		m := c.members[name]
		waitFor(t, 2*time.Second, name+" sees everyone", func() bool { return slices.Equal(m.AliveNodes(), all) })
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
	waitFor(t, 2*time.Second, "n1 notices n3's death", func() bool { return !m1.Alive("n3") })
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
	if !slices.Equal(m1.AliveNodes(), []string{"n1", "n2"}) {
		t.Errorf("n1 sees %v", m1.AliveNodes())
	}

	// n3 restarts (new incarnation on the same address): alive again.
	addr := c.members["n3"].LocalAddr()
	m3 := newTestMember(t, "n3", testSecret, Config{Listen: addr.String()})
	peers := map[string]netip.AddrPort{}
	for n, m := range c.members {
		peers[n] = m.LocalAddr()
	}
	m3.SetPeers(peers)
	c.members["n3"] = m3
	c.run(t, "n3")
	waitFor(t, 2*time.Second, "n1 sees restarted n3", func() bool { return m1.Alive("n3") })
}

func TestLeaveIsImmediate(t *testing.T) {
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret})
	m1, m2 := c.members["n1"], c.members["n2"]
	waitFor(t, 2*time.Second, "n1 sees n2", func() bool { return m1.Alive("n2") })
	start := time.Now()
	m2.Leave()
	if m2.Alive("n2") {
		t.Error("a leaving node still counts itself alive")
	}
	d := waitFor(t, time.Second, "n1 sees n2 leave", func() bool { return !m1.Alive("n2") })
	if d > 50*time.Millisecond {
		t.Errorf("leave seen after %s, want well under one heartbeat interval", time.Since(start))
	}
	// No heartbeat after Leave revives it.
	time.Sleep(3 * DefaultInterval)
	if m1.Alive("n2") {
		t.Error("n2 alive again after leaving")
	}
}

func TestWrongSecretCannotJoin(t *testing.T) {
	wrong := []byte("this-is-not-the-cluster-secret")
	c := startCluster(t, map[string][]byte{"n1": testSecret, "n2": testSecret, "intruder": wrong})
	m1, intr := c.members["n1"], c.members["intruder"]
	waitFor(t, 2*time.Second, "n1 sees n2", func() bool { return m1.Alive("n2") })
	badAuth := m1.metrics.received.WithLabelValues(resultBadAuth)
	waitFor(t, 2*time.Second, "bad_auth counted", func() bool { return testutil.ToFloat64(badAuth) >= 3 })
	time.Sleep(3 * DefaultInterval)
	if m1.Alive("intruder") || c.members["n2"].Alive("intruder") {
		t.Fatal("a node with the wrong secret was accepted as alive")
	}
	if got := intr.AliveNodes(); !slices.Equal(got, []string{"intruder"}) {
		t.Fatalf("the intruder accepted members' heartbeats: %v", got)
	}
	// Even a perfect copy of a legitimate heartbeat replayed by a third
	// party does not help: the sequence number was already seen.
	raw, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	m2 := c.members["n2"]
	peers := map[string]netip.AddrPort{"n1": m1.LocalAddr(), "spy": raw.LocalAddr().(*net.UDPAddr).AddrPort()}
	m2.SetPeers(peers) // n2 now also heartbeats to the spy socket
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, _, err := raw.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	replay := m1.metrics.received.WithLabelValues(resultReplay)
	before := testutil.ToFloat64(replay)
	if _, err := raw.WriteToUDPAddrPort(buf[:n], m1.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "replay counted", func() bool { return testutil.ToFloat64(replay) > before })
}
