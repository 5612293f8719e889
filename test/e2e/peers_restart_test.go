package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/netlab"
)

const (
	// peerHeldConns is how many established keep-alive connections through
	// the VIP each failover run holds across its fault.
	peerHeldConns = 4
	// peerHeldTimeout bounds the one request made on each held connection
	// after the fault: a connection that does not answer within it counts
	// as broken, as a timed-out request would for its user.
	peerHeldTimeout = 2 * time.Second
	// peerRolloutSettle is the pause after a restarted announcer was
	// started before the next node's turn. Fixed and the same for every
	// implementation: kube-vip exposes no readiness to wait for, and a
	// DaemonSet without a readiness probe moves on once the pod runs; 5 s
	// leaves MetalLB's memberlist join and kube-vip's 1 s lease retries
	// time to settle, so what is measured is the handover, not a rollout
	// outrunning the announcers.
	peerRolloutSettle = 5 * time.Second
	// peerRolloutExit bounds the wait for an announcer to exit after
	// SIGTERM (a pod's default grace period is 30 s; none here needs more
	// than a few seconds); after it the announcer is killed and the step
	// logged.
	peerRolloutExit = 15 * time.Second
	// peerRolloutTail is how long the client keeps sending after the last
	// node's settle, so a late failback is seen whole.
	peerRolloutTail = 5 * time.Second
)

// heldConns are established HTTP keep-alive connections through a VIP,
// one per client, each opened (and proved reused) before a fault.
type heldConns struct {
	url   string
	conns []*heldConn
}

// heldConn is one client whose transport holds exactly one connection:
// a second dial means the first one broke (Go's transport silently redials
// an idempotent request whose reused connection died, so the dial, not the
// request's error, is what tells).
type heldConn struct {
	hc *http.Client
	tr *http.Transport

	mu    sync.Mutex
	dials []string // local address of each connection dialled
}

// holdConns opens n keep-alive connections through url from the client and
// checks each carries two requests from the same local port (the transport
// really reuses it).
func (l *trafficLab) holdConns(t testing.TB, url string, n int) *heldConns {
	t.Helper()
	h := &heldConns{url: url}
	for range n {
		c := &heldConn{}
		c.tr = &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := l.net.Client.DialContext(ctx, network, addr)
				if err == nil {
					c.mu.Lock()
					c.dials = append(c.dials, conn.LocalAddr().String())
					c.mu.Unlock()
				}
				return conn, err
			},
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableKeepAlives:   false,
		}
		c.hc = &http.Client{Timeout: peerHeldTimeout, Transport: c.tr}
		t.Cleanup(c.tr.CloseIdleConnections)
		h.conns = append(h.conns, c)
	}
	// The VIP answered new connections just before: a failure here is a
	// stray loss on a loaded machine, retried a few times.
	Eventually(t, 15*time.Second, "keep-alive connections through "+url, func(ctx context.Context) error {
		for _, c := range h.conns {
			c.tr.CloseIdleConnections()
			c.mu.Lock()
			c.dials = nil
			c.mu.Unlock()
			for range 2 {
				if err := c.request(ctx, url); err != nil {
					return err
				}
			}
			if d := c.dialled(); len(d) != 1 {
				t.Fatalf("two requests on a keep-alive client dialled %v: the transport does not reuse its connection", d)
			}
		}
		return nil
	})
	return h
}

func (c *heldConn) request(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, err = io.ReadAll(resp.Body)
	return err
}

func (c *heldConn) dialled() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.dials)
}

// check makes one request on each held connection, all at once, each
// bounded by peerHeldTimeout, and returns how many were broken: the
// request failed (reset, timeout) or needed a new connection. It then
// closes them.
func (h *heldConns) check() (broken int, how []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range h.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.request(context.Background(), h.url)
			d := c.dialled()
			c.tr.CloseIdleConnections()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				broken++
				how = append(how, fmt.Sprintf("conn %d (%s): %v", i, d[0], err))
			case len(d) > 1:
				broken++
				how = append(how, fmt.Sprintf("conn %d: %s broke, redialled from %s", i, d[0], strings.Join(d[1:], ", ")))
			}
		}()
	}
	wg.Wait()
	slices.Sort(how)
	return broken, how
}

// brokenStats is the median / p90 of broken connections, out of peerHeldConns.
func brokenStats(xs []int) string {
	return fmt.Sprintf("%s of %d", intStats(xs), peerHeldConns)
}

// httpSampler sends a request every 10 ms on a new connection (1 s
// timeout), as outage does, until stopped: for faults whose length is not
// known in advance (a rolling restart).
type httpSampler struct {
	stopc chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	samples []httpSample
}

type httpSample struct {
	at time.Duration
	ok bool
}

func (l *trafficLab) sampleHTTP(url string) *httpSampler {
	s := &httpSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func(at time.Duration) {
				defer wg.Done()
				_, err := l.get(context.Background(), url, time.Second)
				s.mu.Lock()
				s.samples = append(s.samples, httpSample{at, err == nil})
				s.mu.Unlock()
			}(time.Since(start))
		}
	}()
	return s
}

// stop ends the requests, waits for those under way and returns the
// longest outage and the failed requests, as outage defines them.
func (s *httpSampler) stop() (time.Duration, int) {
	close(s.stopc)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return longestOutage(s.samples)
}

// longestOutage is the longest time from a failed request to the next one
// that succeeded (to the last sample's slot when none did), and how many
// failed.
func longestOutage(samples []httpSample) (time.Duration, int) {
	samples = slices.Clone(samples)
	slices.SortFunc(samples, func(a, b httpSample) int { return int(a.at - b.at) })
	var longest time.Duration
	n := 0
	for i, s := range samples {
		if s.ok {
			continue
		}
		n++
		if i > 0 && !samples[i-1].ok {
			continue // inside a run of failures counted from its start
		}
		end := samples[len(samples)-1].at + 10*time.Millisecond
		for _, t := range samples[i+1:] {
			if t.ok {
				end = t.at
				break
			}
		}
		longest = max(longest, end-s.at)
	}
	return longest, n
}

// benchPeerRollingRestart restarts every node's announcer in turn, as a
// DaemonSet rollout does (SIGTERM, wait for the exit, start,
// peerRolloutSettle, next node), runs times, while the client sends HTTP
// every 10 ms on new connections through vip and probes its ARP every
// 20 ms, with peerHeldConns keep-alive connections opened before and used
// once after. Per run: client outage, failed requests, changes of the MAC
// answering the VIP, broken held connections, and whether two nodes still
// answer 20 s later.
func (l *trafficLab) benchPeerRollingRestart(b *testing.B, impl lbImpl, vip netip.Addr, url string, runs int, r *peerResult) {
	var outage []time.Duration
	var failed, moves, broken []int
	dups := 0
	for i := range runs {
		owner := l.owner(b, vip, 30*time.Second)
		held := l.holdConns(b, url, peerHeldConns)
		mon, err := l.net.WatchBridge()
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		prober, err := l.net.Client.ProbeVIPs(ctx, []netip.Addr{vip}, probeEvery)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		s := l.sampleHTTP(url)
		time.Sleep(time.Second)
		t0 := time.Now()
		steps := l.rollAnnouncers(b, impl, vip)
		took := time.Since(t0)
		time.Sleep(peerRolloutTail)
		o, n := s.stop()
		if err := prober.Stop(); err != nil {
			b.Logf("prober: %v", err)
		}
		cancel()
		if err := mon.Close(); err != nil {
			b.Logf("bridge monitor (moves may be undercounted): %v", err)
		}
		m := answerMoves(mon.Events(), vip, splitWindow)
		nb, how := held.check()
		dup := !l.oneAnswerer(vip, staleDupWait)
		if dup {
			dups++
		}
		outage, failed, moves, broken = append(outage, o), append(failed, n), append(moves, m), append(broken, nb)
		b.Logf("%s rolling restart run %d, owner %s (took %s: %s): outage %s, %d failed, answering MAC moved %d times, %d of %d held connections broken %v, two answering 20 s later: %t",
			impl.name(), i, owner.Name, took.Round(time.Millisecond), strings.Join(steps, "; "), o, n, m, nb, peerHeldConns, how, dup)
		if i == 0 {
			b.Logf("%s\n%s", vip, mon.Timeline(vip))
		}
		l.settle(b, url)
	}
	r.set("rollout-outage", msStats(outage))
	r.set("rollout-failed", intStats(failed))
	r.set("rollout-moves", intStats(moves))
	r.set("rollout-broken", brokenStats(broken))
	r.set("rollout-dup", fmt.Sprintf("%d of %d", dups, runs))
}

// rollAnnouncers restarts every node's announcer in turn (SIGTERM, wait
// for the exit, start, peerRolloutSettle) and says how long each exit took
// and whether vip was left on one of the node's devices.
func (l *trafficLab) rollAnnouncers(b *testing.B, impl lbImpl, vip netip.Addr) []string {
	var steps []string
	for _, n := range l.net.Nodes {
		p := l.ann[n.Name]
		ts := time.Now()
		if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM); err != nil {
			b.Fatalf("SIGTERM to the announcer on %s: %v", n.Name, err)
		}
		step := n.Name + " exit "
		select {
		case <-p.done:
			step += time.Since(ts).Round(time.Millisecond).String()
		case <-time.After(peerRolloutExit):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			step += "none within " + peerRolloutExit.String() + ", killed"
		}
		// An announcer that binds its VIPs to a device (kube-vip) may
		// leave them there on exit, and the kernel keeps answering: said
		// here, as it explains a rollout without handovers.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := n.Run(ctx, "ip", "-o", "addr", "show", "to", vip.String())
		cancel()
		if f := strings.Fields(out); err == nil && len(f) > 1 {
			step += " (VIP left on " + f[1] + ")"
		}
		steps = append(steps, step)
		impl.startAnnouncer(l, n)
		time.Sleep(peerRolloutSettle)
	}
	return steps
}

// oneAnswerer waits up to wait until exactly one node answers the client's
// ARP requests for vip.
func (l *trafficLab) oneAnswerer(vip netip.Addr, wait time.Duration) bool {
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		macs, err := l.net.Client.Arping(ctx, vip, 3, 100*time.Millisecond)
		cancel()
		if err == nil && len(macs) == 1 {
			return true
		}
	}
	return false
}

// answerMoves counts the times the MAC answering for vip (replies and
// gratuitous packets) changed for good: a new MAC takes over only once the
// current one is not heard from within window after it. Two nodes
// answering at once for a moment is one handover (or none, when the
// first keeps answering), not one move per alternating reply.
func answerMoves(ev netlab.Events, vip netip.Addr, window time.Duration) int {
	var ans netlab.Events
	for _, e := range ev {
		if a, ok := e.Answer(); ok && a == vip {
			ans = append(ans, e)
		}
	}
	slices.SortStableFunc(ans, func(a, b netlab.Event) int { return a.Time.Compare(b.Time) })
	owner, n := "", 0
	for i, e := range ans {
		m := e.MAC.String()
		if owner == "" {
			owner = m
		}
		if m == owner {
			continue
		}
		back := false
		for _, f := range ans[i+1:] {
			if f.Time.Sub(e.Time) > window {
				break
			}
			if f.MAC.String() == owner {
				back = true
				break
			}
		}
		if !back {
			owner = m
			n++
		}
	}
	return n
}

// TestAnswerMoves checks the rolling restart's move count on made-up
// timelines (no lab needed).
func TestAnswerMoves(t *testing.T) {
	vip, client := netlab.VIP4(0), netip.MustParseAddr("192.0.2.100")
	a, b := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	t0 := time.Unix(1000, 0)
	every := func(mac net.HardwareAddr, from, to int) netlab.Events {
		var ev netlab.Events
		for ms := from; ms < to; ms += 20 {
			ev = append(ev, netlab.Event{Time: t0.Add(time.Duration(ms) * time.Millisecond), Kind: netlab.ARPReply, MAC: mac, SenderIP: vip, TargetIP: client})
		}
		return ev
	}
	claim := func(mac net.HardwareAddr, ms int) netlab.Events {
		return netlab.Events{{Time: t0.Add(time.Duration(ms) * time.Millisecond), Kind: netlab.ARPRequest, MAC: mac, SenderIP: vip, TargetIP: vip}}
	}
	for _, tc := range []struct {
		name string
		ev   netlab.Events
		want int
	}{
		{"one owner throughout", every(a, 0, 1000), 0},
		{"clean handover", slices.Concat(every(a, 0, 500), claim(b, 500), every(b, 500, 1000)), 1},
		{"handover and back", slices.Concat(every(a, 0, 500), every(b, 500, 800), every(a, 800, 1000)), 2},
		{"both answer, then the new one alone", slices.Concat(every(a, 0, 600), every(b, 400, 1000)), 1},
		{"both answer, then the old one alone", slices.Concat(every(a, 0, 1000), every(b, 400, 600)), 0},
		{"a non-owner's claim the owner answers over", slices.Concat(every(a, 0, 1000), claim(b, 505)), 0},
	} {
		if got := answerMoves(tc.ev, vip, splitWindow); got != tc.want {
			t.Errorf("%s: %d moves, want %d", tc.name, got, tc.want)
		}
	}
}
