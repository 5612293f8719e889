package bgp

// Test plumbing for the network-namespace tests: each speaker runs in its
// own node namespace as a child process (this test binary re-executed under
// `ip netns exec` in helper mode, driven by JSON lines on stdin), because
// gobgp opens its sockets from goroutines of its own, which would not
// inherit a namespace entered by one locked OS thread. BIRD 2 runs in a
// router namespace with its config, log and control socket in t.TempDir().

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

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
	Op     string     `json:"op"` // start, peers, routes, states, withdraw, stop
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
		case req.Op == "withdraw":
			err = sp.WithdrawAll(rctx)
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
			dumpTail(t, sp.log)
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

func dumpTail(t testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	t.Logf("--- %s (tail) ---\n%s", filepath.Base(path), b)
}

// bird is a BIRD 2 daemon in a router namespace.
type bird struct {
	t    testing.TB
	sock string
	log  string
}

// requireBIRD skips (or fails under PVELB_REQUIRE_PRIVILEGED=1) when BIRD 2
// is not installed.
func requireBIRD(t testing.TB) {
	t.Helper()
	netlab.RequirePrivileged(t)
	for _, n := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(n); err != nil {
			msg := fmt.Sprintf("BGP tests need BIRD 2 (Debian: apt-get install bird2): %v", err)
			if os.Getenv(netlab.EnvRequirePrivileged) == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// startBIRD runs BIRD in h's namespace with the given protocol section
// appended to a base config (router ID from h, device/direct protocols, and
// kernel protocols that install BGP routes with ECMP merging).
func startBIRD(t testing.TB, h *netlab.Host, protocols string) *bird {
	t.Helper()
	dir := t.TempDir()
	b := &bird{t: t, sock: filepath.Join(dir, "bird.ctl"), log: filepath.Join(dir, "bird.log")}
	cfg := fmt.Sprintf(`log "%s" all;
router id %s;
protocol device { scan time 1; }
protocol direct { ipv4; ipv6; interface "%s"; }
protocol kernel k4 { ipv4 { export where source = RTS_BGP; }; merge paths on; }
protocol kernel k6 { ipv6 { export where source = RTS_BGP; }; merge paths on; }
%s
`, b.log, h.IPv4.Addr(), h.Link, protocols)
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.Netns, "bird", "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting bird: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("bird output: %s", out.String())
			dumpTail(t, b.log)
		}
	})
	// Bounded wait for the control socket.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.birdc("show", "status"); err == nil {
			return b
		}
		select {
		case <-exited:
			t.Fatalf("bird exited: %s\nconfig:\n%s", out.String(), cfg)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird control socket did not come up: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// birdc talks to the daemon over its unix socket, which does not depend on
// the network namespace, so it runs from the test's own namespace.
func (b *bird) birdc(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// protocolStates maps BGP protocol name to its state info ("Established",
// "Active", "Connect", ... plus any error BIRD shows).
func (b *bird) protocolStates() (map[string]string, error) {
	out, err := b.birdc("show", "protocols")
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "BGP" {
			states[f[0]] = strings.Join(f[5:], " ")
		}
	}
	return states, nil
}

// birdPath is one path BIRD holds for a prefix.
type birdPath struct {
	Proto string            // BGP protocol it came from
	Via   string            // next hop BIRD resolved ("via X on dev")
	Attrs map[string]string // "BGP.local_pref" -> "200"
}

var (
	pathHead = regexp.MustCompile(`^\S*\s+unicast \[(\S+) `)
	viaLine  = regexp.MustCompile(`^\s+via (\S+) on `)
	attrLine = regexp.MustCompile(`^\s+(BGP\.\w+): ?(.*)$`)
)

// routes returns every path BIRD holds for exactly this prefix.
func (b *bird) routes(p netip.Prefix) ([]birdPath, error) {
	out, err := b.birdc("show", "route", p.String(), "all")
	if err != nil {
		// birdc exits 1 on BIRD's "8001 Network not found" reply.
		if strings.Contains(out, "Network not found") {
			return nil, nil
		}
		return nil, err
	}
	return parseBIRDRoutes(out), nil
}

func parseBIRDRoutes(out string) []birdPath {
	var paths []birdPath
	for _, line := range strings.Split(out, "\n") {
		if m := pathHead.FindStringSubmatch(line); m != nil {
			paths = append(paths, birdPath{Proto: m[1], Attrs: map[string]string{}})
			continue
		}
		if len(paths) == 0 {
			continue
		}
		cur := &paths[len(paths)-1]
		if m := viaLine.FindStringSubmatch(line); m != nil {
			cur.Via = m[1]
		} else if m := attrLine.FindStringSubmatch(line); m != nil {
			cur.Attrs[m[1]] = strings.TrimSpace(m[2])
		}
	}
	return paths
}

func vias(paths []birdPath) []string {
	var v []string
	for _, p := range paths {
		v = append(v, p.Via)
	}
	return v
}

// eventually polls cond every interval until it returns nil or timeout
// passes, and returns cond's last error.
func eventually(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// birdConn is one connection to BIRD's control socket, for polling at
// sub-millisecond cost (one birdc process per query costs milliseconds).
type birdConn struct {
	c  net.Conn
	rd *bufio.Reader
}

func (b *bird) dial() (*birdConn, error) {
	c, err := net.Dial("unix", b.sock)
	if err != nil {
		return nil, err
	}
	bc := &birdConn{c: c, rd: bufio.NewReader(c)}
	if _, err := bc.reply(); err != nil { // "0001 BIRD x ready."
		c.Close()
		return nil, err
	}
	return bc, nil
}

// reply reads one reply: lines "NNNN-text" or " text" continue it, and
// "NNNN text" ends it.
func (bc *birdConn) reply() (string, error) {
	var sb strings.Builder
	_ = bc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := bc.rd.ReadString('\n')
		if err != nil {
			return sb.String(), err
		}
		sb.WriteString(line)
		if len(line) >= 5 && line[4] == ' ' && strings.Trim(line[:4], "0123456789") == "" {
			return sb.String(), nil
		}
	}
}

// has reports whether BIRD holds a route for exactly p.
func (bc *birdConn) has(p netip.Prefix) (bool, error) {
	if _, err := fmt.Fprintf(bc.c, "show route %s\n", p); err != nil {
		return false, err
	}
	out, err := bc.reply()
	if err != nil {
		return false, err
	}
	return strings.Contains(out, p.String()+" "), nil
}
