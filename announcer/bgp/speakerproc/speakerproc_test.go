package speakerproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/test/waitfor"
)

const password = "s3cret-md5-key"

// fakeSpeaker records what Serve asks of it. (The gobgp speaker behind
// pvelb-bgp-speaker is tested against BIRD in announcer/bgp and test/e2e.)
type fakeSpeaker struct {
	mu        sync.Mutex
	cfg       Config
	started   bool
	stopped   bool
	last      desired.Desired
	got       desired.Desired // the last Reconcile's, kept after Stop
	startErr  error
	reconcErr error
}

func (f *fakeSpeaker) Start(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = f.startErr == nil
	return f.startErr
}

func (f *fakeSpeaker) Reconcile(_ context.Context, d desired.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last, f.got = d, d
	return f.reconcErr
}

func (f *fakeSpeaker) States(context.Context) (States, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s States
	for _, p := range f.last.Peers {
		s.Peers = append(s.Peers, PeerState{Name: p.Name, Address: netip.MustParseAddr(p.Spec.PeerAddress), State: "established", Advertised: uint64(len(f.last.VIPs))})
	}
	s.Routes = len(f.last.VIPs)
	return s, nil
}

func (f *fakeSpeaker) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped, f.last = true, desired.Desired{}
	return nil
}

var testConfig = Config{RouterID: netip.MustParseAddr("192.0.2.11"), LocalASN: 64512, ListenPort: desired.NoListen, ConnectRetry: time.Second}

var testDesired = desired.Desired{
	Peers: []desired.PeerInput{{Name: "tor", Password: password, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.1", PeerASN: 64500, MyASN: 64512,
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Namespace: "pvelb-system", Name: "pw"}}}},
	VIPs: []desired.VIP{{IP: netip.MustParseAddr("198.51.100.5"), Communities: []string{"no-export"}}},
}

func lines(reqs ...Request) string {
	var b strings.Builder
	for _, r := range reqs {
		if err := writeLine(&b, r); err != nil {
			panic(err)
		}
	}
	return b.String()
}

func decodeReplies(t *testing.T, out string) []Reply {
	t.Helper()
	var rs []Reply
	l := newLineReader(strings.NewReader(out))
	for {
		var r Reply
		err := l.next(&r)
		if errors.Is(err, io.EOF) {
			return rs
		}
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
}

// TestServe drives the child's side with request streams and checks the
// replies and what the speaker was asked to do.
func TestServe(t *testing.T) {
	d := testDesired
	tests := []struct {
		name       string
		in         string
		startErr   error
		reconcErr  error
		wantErr    string
		wantReply  []string // per reply: "" for success, else a substring of its error
		wantRoutes int      // from the last reply's states, -1 when it has none
		wantStop   bool
	}{
		{name: "start, desired, stop", in: lines(Request{Seq: 1, Start: &testConfig}, Request{Seq: 2, Desired: &d}, Request{Seq: 3, Stop: true}),
			wantReply: []string{"", "", ""}, wantRoutes: -1, wantStop: true},
		{name: "stdin closes: withdraw and exit", in: lines(Request{Seq: 1, Start: &testConfig}, Request{Seq: 2, Desired: &d}, Request{Seq: 3, States: true}),
			wantReply: []string{"", "", ""}, wantRoutes: 1, wantStop: true},
		{name: "first request must be start", in: lines(Request{Seq: 1, Desired: &d}),
			wantErr: "first request must be start", wantReply: []string{"first request must be start"}, wantRoutes: -1},
		{name: "start fails", in: lines(Request{Seq: 1, Start: &testConfig}), startErr: errors.New("listen tcp :179: address in use"),
			wantErr: "address in use", wantReply: []string{"address in use"}, wantRoutes: -1},
		{name: "reconcile problems are answered, serving goes on", in: lines(Request{Seq: 1, Start: &testConfig}, Request{Seq: 2, Desired: &d}, Request{Seq: 3, States: true}),
			reconcErr: errors.New("BGPPeer tor: spec.holdTime: bad"), wantReply: []string{"", "spec.holdTime", ""}, wantRoutes: 1, wantStop: true},
		{name: "a second start is refused", in: lines(Request{Seq: 1, Start: &testConfig}, Request{Seq: 2, Start: &testConfig}),
			wantReply: []string{"", "already started"}, wantRoutes: -1, wantStop: true},
		{name: "two actions in one request", in: lines(Request{Seq: 1, Start: &testConfig}, Request{Seq: 2, Desired: &d, Stop: true}),
			wantReply: []string{"", "exactly one of start, desired, states and stop"}, wantRoutes: -1, wantStop: true},
		{name: "garbage line is reported without its contents", in: lines(Request{Seq: 1, Start: &testConfig}) + `{"seq":2,"desired":` + password + "\n",
			wantReply: []string{""}, wantRoutes: -1, wantStop: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeSpeaker{startErr: tt.startErr, reconcErr: tt.reconcErr}
			var out bytes.Buffer
			err := Serve(context.Background(), strings.NewReader(tt.in), &out, func(c Config) (Speaker, error) {
				fake.cfg = c
				return fake, nil
			}, ServeOptions{})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Serve: %v, want error %q", err, tt.wantErr)
			}
			if strings.Contains(out.String(), password) {
				t.Fatal("a reply carries the password")
			}
			rs := decodeReplies(t, out.String())
			if len(rs) != len(tt.wantReply) {
				t.Fatalf("%d replies %+v, want %d", len(rs), rs, len(tt.wantReply))
			}
			for i, r := range rs {
				if r.Seq != uint64(i+1) {
					t.Errorf("reply %d answers seq %d", i, r.Seq)
				}
				if w := tt.wantReply[i]; w == "" && r.Error != "" || w != "" && !strings.Contains(r.Error, w) {
					t.Errorf("reply %d error %q, want %q", i, r.Error, w)
				}
			}
			if tt.wantRoutes >= 0 {
				last := rs[len(rs)-1]
				if last.States == nil || last.States.Routes != tt.wantRoutes || len(last.States.Peers) != 1 || last.States.Peers[0].Name != "tor" {
					t.Errorf("last reply states %+v, want %d routes to tor", last.States, tt.wantRoutes)
				}
				if fake.cfg != testConfig {
					t.Errorf("speaker config %+v, want %+v", fake.cfg, testConfig)
				}
				if got := fake.got; len(got.Peers) != 1 || got.Peers[0].Password != password {
					t.Errorf("speaker got %+v: the password must reach it", got)
				}
			}
			if fake.stopped != tt.wantStop {
				t.Errorf("stopped %v, want %v", fake.stopped, tt.wantStop)
			}
		})
	}
}

// TestWireRoundTrip: everything a Desired holds survives the line, passwords
// included (bgp.Secret would redact them, so the wire carries plain strings).
func TestWireRoundTrip(t *testing.T) {
	d := testDesired
	lp := uint32(150)
	d.VIPs = append(d.VIPs, desired.VIP{IP: netip.MustParseAddr("2001:db8::5"), LocalPreference: &lp})
	var b bytes.Buffer
	if err := writeLine(&b, Request{Seq: 7, Desired: &d, Start: &testConfig}); err != nil {
		t.Fatal(err)
	}
	var got Request
	if err := newLineReader(&b).next(&got); err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(Request{Seq: 7, Desired: &d, Start: &testConfig})
	if !bytes.Equal(gj, wj) || got.Desired.Peers[0].Password != password || *got.Start != testConfig {
		t.Fatalf("round trip:\n got %s\nwant %s", gj, wj)
	}
}

func TestLineErrorsWithholdContents(t *testing.T) {
	for _, in := range []string{
		`{"seq":1,"desired":{"Peers":[{"Name":"tor","Password":` + password + `}]}}`,
		`{"seq":1,"desired":{"Peers":[{"Name":"tor","Password":1}]}}` + password,
		`{"seq":1,"start":{"routerID":"` + password + `"}}`,
	} {
		var r Request
		err := newLineReader(strings.NewReader(in + "\n")).next(&r)
		if err == nil {
			t.Fatalf("%q decoded", in)
		}
		if strings.Contains(err.Error(), password) {
			t.Fatalf("error %q quotes the line", err)
		}
	}
}

func TestCollectStates(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collectorFunc(func(ch chan<- prometheus.Metric) {
		CollectStates(ch, States{Routes: 2, Peers: []PeerState{
			{Name: "tor", Address: netip.MustParseAddr("192.0.2.1"), State: "established", Advertised: 2},
			{Name: "tor6", Address: netip.MustParseAddr("2001:db8::1"), State: "active"},
		}})
	}))
	want := `
# HELP pvelb_announcer_bgp_routes VIP routes this node originates.
# TYPE pvelb_announcer_bgp_routes gauge
pvelb_announcer_bgp_routes 2
# HELP pvelb_announcer_bgp_session_up 1 when the BGP session to the peer is established, else 0.
# TYPE pvelb_announcer_bgp_session_up gauge
pvelb_announcer_bgp_session_up{address="192.0.2.1",peer="tor"} 1
pvelb_announcer_bgp_session_up{address="2001:db8::1",peer="tor6"} 0
# HELP pvelb_announcer_bgp_session_state BGP session FSM state (1 for the current state).
# TYPE pvelb_announcer_bgp_session_state gauge
pvelb_announcer_bgp_session_state{address="192.0.2.1",peer="tor",state="established"} 1
pvelb_announcer_bgp_session_state{address="2001:db8::1",peer="tor6",state="active"} 1
# HELP pvelb_announcer_bgp_routes_advertised Routes this speaker has advertised to the peer.
# TYPE pvelb_announcer_bgp_routes_advertised gauge
pvelb_announcer_bgp_routes_advertised{address="192.0.2.1",peer="tor"} 2
pvelb_announcer_bgp_routes_advertised{address="2001:db8::1",peer="tor6"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

type collectorFunc func(chan<- prometheus.Metric)

func (collectorFunc) Describe(chan<- *prometheus.Desc)      {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// The test binary doubles as the child: with this variable set, TestMain
// serves a fake speaker on stdin/stdout instead of running tests, so the
// Client is tested against a real process that can die and be restarted.
const childEnv = "PVELB_SPEAKERPROC_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "serve":
		err := Serve(context.Background(), os.Stdin, os.Stdout, func(Config) (Speaker, error) { return &fakeSpeaker{}, nil },
			ServeOptions{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// Leave a mark that the child stopped cleanly (withdrew).
		if f := os.Getenv(childEnv + "_STOPPED"); f != "" {
			_ = os.WriteFile(f, []byte("stopped"), 0o644)
		}
		os.Exit(0)
	case "fail":
		fmt.Fprintln(os.Stderr, "cannot start")
		os.Exit(3)
	}
}

func startChild(t *testing.T, mode string) (*Client, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mark := t.TempDir() + "/stopped"
	t.Setenv(childEnv, mode)
	t.Setenv(childEnv+"_STOPPED", mark)
	c, err := Start(context.Background(), Options{Binary: self, Config: testConfig, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, StartTimeout: 5 * time.Second})
	if err != nil {
		return nil, mark
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
	return c, mark
}

func TestClientReconcileStatesStop(t *testing.T) {
	c, mark := startChild(t, "serve")
	if c == nil {
		t.Fatal("child did not start")
	}
	ctx := context.Background()
	if err := c.Reconcile(ctx, testDesired); err != nil {
		t.Fatal(err)
	}
	if s, err := c.States(ctx); err != nil || s.Routes != 1 || len(s.Peers) != 1 || s.Peers[0].State != "established" {
		t.Fatalf("states %+v, %v: want one established peer and one route", s, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(mark); err != nil || string(b) != "stopped" {
		t.Fatalf("child did not stop cleanly: %v", err)
	}
}

// TestClientRestartsDeadChild kills the child; the client must start a new
// one and hand it the last desired state without being asked again.
func TestClientRestartsDeadChild(t *testing.T) {
	c, _ := startChild(t, "serve")
	if c == nil {
		t.Fatal("child did not start")
	}
	if err := c.Reconcile(context.Background(), testDesired); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	first := c.cur
	c.mu.Unlock()
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	// Until the new child is up, the sessions are reported down.
	c.mu.Lock()
	restarting := c.cur == nil
	c.mu.Unlock()
	if s, err := c.States(context.Background()); err == nil && restarting && (len(s.Peers) != 1 || s.Peers[0].State != "idle" || s.Routes != 0) {
		t.Errorf("states while restarting %+v, want tor idle and no routes", s)
	}
	waitfor.Until(t, 10*time.Second, "a new child with the last state", func() bool {
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		s, err := c.States(context.Background())
		return cur != nil && cur != first && err == nil && s.Routes == 1
	})
}

func TestClientStartFails(t *testing.T) {
	c, _ := startChild(t, "fail")
	if c != nil {
		t.Fatal("Start succeeded with a child that exits at once")
	}
	_, err := Start(context.Background(), Options{Binary: "/nonexistent/pvelb-bgp-speaker", Config: testConfig})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/pvelb-bgp-speaker") {
		t.Fatalf("error %v, want one naming the binary", err)
	}
}
