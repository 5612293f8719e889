// Package e2e runs pvelb's real binaries against a real kube-apiserver and
// etcd and the Proxmox simulator. Helpers here start and stop those processes;
// the tests live in *_test.go files.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/apiserver"
)

// Binary returns the path of one of pvelb's commands: from PVELB_BIN_DIR when
// `make test` built them, else built into a temporary directory once per test
// binary.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("PVELB_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	root, err := apiserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// One directory for all, as `make build` lays them out: pvelb-announcer
	// finds pvelb-bgp-speaker next to itself.
	if builtDir == "" {
		dir, err := os.MkdirTemp("", "pvelb-bin-")
		if err != nil {
			t.Fatal(err)
		}
		builtDir = dir
	}
	out := filepath.Join(builtDir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, b)
	}
	built[name] = out
	return out
}

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	builtDir string
)

// Process is a pvelb command running for a test; its output is kept and shown
// when the test fails.
type Process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// Start runs bin with args and stops it (SIGTERM, then SIGKILL) in t.Cleanup.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), p.out.tail(20000))
		}
	})
	return p
}

// Stop sends SIGTERM and waits up to 10 s before SIGKILL.
func (p *Process) Stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.out.tail(1 << 30) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Eventually polls cond every 100 ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = cond(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true after %s: %v", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Consistently checks cond every 100 ms for the whole duration and fails the
// test the first time it returns an error.
func Consistently(t testing.TB, d time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	ctx := context.Background()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := cond(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// errorf is fmt.Errorf, named for readability in conditions.
var errorf = fmt.Errorf

// insecureLoopback is for probing the health endpoint of a process this test
// started on 127.0.0.1 with a self-signed certificate it generated itself.
func insecureLoopback() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // loopback, self-signed test certificate
}

// waitHealthz waits until p's HTTPS healthz at url answers 200, dialling
// with dial (a namespace's DialContext: the process may live in one), and
// fails the test at once if p exits.
func waitHealthz(t testing.TB, p *Process, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string, timeout time.Duration) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext:     dial,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // own process, self-signed
	}}
	Eventually(t, timeout, "healthz at "+url, func(ctx context.Context) error {
		if p.Exited() {
			t.Fatalf("process exited:\n%s", p.Output())
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
}
