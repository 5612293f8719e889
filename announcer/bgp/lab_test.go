package bgp

// Test plumbing for the network-namespace tests: each speaker runs in its
// own node namespace as a child process (this test binary re-executed under
// `ip netns exec` in helper mode, driven by JSON lines on stdin), because
// gobgp opens its sockets from goroutines of its own, which would not
// inherit a namespace entered by one locked OS thread. BIRD 2 runs in a
// router namespace with its config, log and control socket in t.TempDir().

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/pvelb/pvelb/test/bird"
	"github.com/pvelb/pvelb/test/netlab"
	"k8s.io/klog/v2"
)

const helperEnv = "PVELB_BGP_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// wirePeer carries the password that Secret refuses to marshal.
type wirePeer struct {
	Peer
	Password string `json:"password"`
}

type helperReq struct {
	Op     string     `json:"op"` // start, peers, routes, states, stop
	Config Config     `json:"config"`
	Peers  []wirePeer `json:"peers"`
	Routes []Route    `json:"routes"`
	// Desired is the input of Reconcile (PeerInput carries plain passwords).
	Desired Desired `json:"desired"`
}

type helperResp struct {
	Err     string      `json:"err,omitempty"`
	States  []PeerState `json:"states,omitempty"`
	Metrics string      `json:"metrics,omitempty"`
}

func runHelper(in io.Reader, out io.Writer) int {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "2")
	ctx := context.Background()
	var sp *Speaker
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	for {
		var req helperReq
		if err := dec.Decode(&req); err != nil {
			if sp != nil {
				_ = sp.Stop(ctx)
			}
			return 0
		}
		var resp helperResp
		var err error
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		switch {
		case req.Op == "start":
			if sp, err = New(req.Config); err == nil {
				err = sp.Start(rctx)
			}
		case sp == nil:
			err = errors.New("helper: speaker not started")
		case req.Op == "peers":
			peers := make([]Peer, 0, len(req.Peers))
			for _, w := range req.Peers {
				p := w.Peer
				p.Password = Secret(w.Password)
				peers = append(peers, p)
			}
			err = sp.SetPeers(rctx, peers)
		case req.Op == "routes":
			err = sp.SetRoutes(rctx, req.Routes)
		case req.Op == "reconcile":
			err = sp.Reconcile(rctx, req.Desired)
		case req.Op == "metrics":
			resp.Metrics, err = gatherText(NewCollector(sp))
		case req.Op == "states":
			resp.States, err = sp.PeerStates(rctx)
		case req.Op == "stop":
			err = sp.Stop(rctx)
		default:
			err = fmt.Errorf("helper: unknown op %q", req.Op)
		}
		cancel()
		if err != nil {
			resp.Err = err.Error()
		}
		if enc.Encode(resp) != nil {
			return 1
		}
	}
}

// speakerProc is a Speaker running in a node namespace.
type speakerProc struct {
	t    testing.TB
	host *netlab.Host
	cmd  *exec.Cmd
	mu   sync.Mutex
	enc  *json.Encoder
	dec  *json.Decoder
	log  string
}

// startSpeaker runs a speaker in h's namespace with cfg (started).
func startSpeaker(t testing.TB, h *netlab.Host, cfg Config) *speakerProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sp := &speakerProc{t: t, host: h, log: filepath.Join(t.TempDir(), "speaker-"+h.Name+".log")}
	logf, err := os.Create(sp.log)
	if err != nil {
		t.Fatal(err)
	}
	sp.cmd = exec.Command("ip", "netns", "exec", h.Netns, exe, "-test.run=^$")
	sp.cmd.Env = append(os.Environ(), helperEnv+"=1")
	sp.cmd.Stderr = logf
	stdin, err := sp.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := sp.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.cmd.Start(); err != nil {
		t.Fatalf("starting speaker in %s: %v", h.Netns, err)
	}
	sp.enc, sp.dec = json.NewEncoder(stdin), json.NewDecoder(stdout)
	t.Cleanup(func() {
		_ = stdin.Close() // the helper stops its speaker on EOF
		done := make(chan struct{})
		go func() { _ = sp.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = sp.cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			bird.DumpTail(t, sp.log)
		}
	})
	if err := sp.do(helperReq{Op: "start", Config: cfg}).err(); err != nil {
		t.Fatalf("speaker %s: %v", h.Name, err)
	}
	return sp
}

func (r helperResp) err() error {
	if r.Err == "" {
		return nil
	}
	return errors.New(r.Err)
}

func (sp *speakerProc) do(req helperReq) helperResp {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err := sp.enc.Encode(req); err != nil {
		return helperResp{Err: fmt.Sprintf("speaker %s: sending %s: %v", sp.host.Name, req.Op, err)}
	}
	var resp helperResp
	if err := sp.dec.Decode(&resp); err != nil {
		return helperResp{Err: fmt.Sprintf("speaker %s: reading %s reply: %v", sp.host.Name, req.Op, err)}
	}
	return resp
}

func (sp *speakerProc) setPeers(peers ...Peer) error {
	w := make([]wirePeer, 0, len(peers))
	for _, p := range peers {
		w = append(w, wirePeer{Peer: p, Password: string(p.Password)})
	}
	return sp.do(helperReq{Op: "peers", Peers: w}).err()
}

func (sp *speakerProc) setRoutes(routes ...Route) error {
	if routes == nil {
		routes = []Route{}
	}
	return sp.do(helperReq{Op: "routes", Routes: routes}).err()
}

func (sp *speakerProc) states() ([]PeerState, error) {
	r := sp.do(helperReq{Op: "states"})
	return r.States, r.err()
}

func (sp *speakerProc) reconcile(d Desired) error {
	return sp.do(helperReq{Op: "reconcile", Desired: d}).err()
}

func (sp *speakerProc) metrics() (string, error) {
	r := sp.do(helperReq{Op: "metrics"})
	return r.Metrics, r.err()
}

// gatherText renders a collector in the Prometheus text format.
func gatherText(c prometheus.Collector) (string, error) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		return "", err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

func (sp *speakerProc) stop() error { return sp.do(helperReq{Op: "stop"}).err() }

// kill ends the speaker process abruptly, like SIGKILL of the announcer.
func (sp *speakerProc) kill() {
	// The child of `ip netns exec` is the test binary itself (ip execs it).
	_ = sp.cmd.Process.Kill()
}
