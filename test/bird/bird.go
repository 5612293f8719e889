// Package bird runs BIRD 2 as a BGP router in a network-namespace lab
// (test/netlab) and reads what it learned, for tests and benchmarks of the
// announcer's BGP speaker: its config, log and control socket live in
// t.TempDir(), and the daemon is killed in t.Cleanup.
package bird

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/netlab"
)

// Daemon is a BIRD 2 daemon in a router namespace.
type Daemon struct {
	Socket string // control socket (reachable from any namespace)
	Log    string // BIRD's log file
}

// Require skips (or fails under PVELB_REQUIRE_PRIVILEGED=1) when the test
// cannot create namespaces or BIRD 2 is not installed.
func Require(t testing.TB) {
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

// Start runs BIRD in h's namespace with the given protocol section appended
// to a base config (router ID from h, device/direct protocols, and kernel
// protocols that install BGP routes with ECMP merging).
func Start(t testing.TB, h *netlab.Host, protocols string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	b := &Daemon{Socket: filepath.Join(dir, "bird.ctl"), Log: filepath.Join(dir, "bird.log")}
	cfg := fmt.Sprintf(`log "%s" all;
router id %s;
protocol device { scan time 1; }
protocol direct { ipv4; ipv6; interface "%s"; }
protocol kernel k4 { ipv4 { export where source = RTS_BGP; }; merge paths on; }
protocol kernel k6 { ipv6 { export where source = RTS_BGP; }; merge paths on; }
%s
`, b.Log, h.IPv4.Addr(), h.Link, protocols)
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.Netns, "bird", "-f", "-c", path, "-s", b.Socket, "-P", filepath.Join(dir, "bird.pid"))
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
			DumpTail(t, b.Log)
		}
	})
	// Bounded wait for the control socket.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.Birdc("show", "status"); err == nil {
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

// DumpTail logs the end of a log file (for failed tests).
func DumpTail(t testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	t.Logf("--- %s (tail) ---\n%s", filepath.Base(path), b)
}

// Birdc talks to the daemon over its unix socket, which does not depend on
// the network namespace, so it runs from the test's own namespace.
func (b *Daemon) Birdc(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ProtocolStates maps BGP protocol name to its state info ("Established",
// "Active", "Connect", ... plus any error BIRD shows).
func (b *Daemon) ProtocolStates() (map[string]string, error) {
	out, err := b.Birdc("show", "protocols")
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

// Path is one path BIRD holds for a prefix.
type Path struct {
	Proto string            // BGP protocol it came from
	Via   string            // next hop BIRD resolved ("via X on dev")
	Attrs map[string]string // "BGP.local_pref" -> "200"
}

var (
	pathHead = regexp.MustCompile(`^\S*\s+unicast \[(\S+) `)
	viaLine  = regexp.MustCompile(`^\s+via (\S+) on `)
	attrLine = regexp.MustCompile(`^\s+(BGP\.\w+): ?(.*)$`)
)

// Routes returns every path BIRD holds for exactly this prefix.
func (b *Daemon) Routes(p netip.Prefix) ([]Path, error) {
	out, err := b.Birdc("show", "route", p.String(), "all")
	if err != nil {
		// birdc exits 1 on BIRD's "8001 Network not found" reply.
		if strings.Contains(out, "Network not found") {
			return nil, nil
		}
		return nil, err
	}
	return ParseRoutes(out), nil
}

// ParseRoutes reads the output of `birdc show route <prefix> all`.
func ParseRoutes(out string) []Path {
	var paths []Path
	for _, line := range strings.Split(out, "\n") {
		if m := pathHead.FindStringSubmatch(line); m != nil {
			paths = append(paths, Path{Proto: m[1], Attrs: map[string]string{}})
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

// Vias lists the resolved next hops of paths, in order.
func Vias(paths []Path) []string {
	var v []string
	for _, p := range paths {
		v = append(v, p.Via)
	}
	return v
}

// Eventually polls cond every interval until it returns nil or timeout
// passes, and returns cond's last error.
func Eventually(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// Conn is one connection to BIRD's control socket, for polling at
// sub-millisecond cost (one birdc process per query costs milliseconds).
type Conn struct {
	c  net.Conn
	rd *bufio.Reader
}

// Dial opens a control connection.
func (b *Daemon) Dial() (*Conn, error) {
	c, err := net.Dial("unix", b.Socket)
	if err != nil {
		return nil, err
	}
	bc := &Conn{c: c, rd: bufio.NewReader(c)}
	if _, err := bc.reply(); err != nil { // "0001 BIRD x ready."
		c.Close()
		return nil, err
	}
	return bc, nil
}

// Close closes the connection.
func (bc *Conn) Close() error { return bc.c.Close() }

// reply reads one reply: lines "NNNN-text" or " text" continue it, and
// "NNNN text" ends it.
func (bc *Conn) reply() (string, error) {
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

// Has reports whether BIRD holds a route for exactly p.
func (bc *Conn) Has(p netip.Prefix) (bool, error) {
	if _, err := fmt.Fprintf(bc.c, "show route %s\n", p); err != nil {
		return false, err
	}
	out, err := bc.reply()
	if err != nil {
		return false, err
	}
	return strings.Contains(out, p.String()+" "), nil
}

// PathCount returns how many paths BIRD holds for exactly p (the number of
// next hops when every path comes from a different node).
func (bc *Conn) PathCount(p netip.Prefix) (int, error) {
	if _, err := fmt.Fprintf(bc.c, "show route %s\n", p); err != nil {
		return 0, err
	}
	out, err := bc.reply()
	if err != nil {
		return 0, err
	}
	return strings.Count(out, "unicast ["), nil
}
