package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// The churn suite: random but seeded operations on Services, IPPools, the
// pvelb-ccm replicas, the apiserver and Proxmox, with the address and IPSet
// invariants checked all along. `make test` runs a short run (about 300
// operations, bounded to about 90 s); `make soak` runs the long one, sized by
// PVELB_SOAK_OPS, PVELB_SOAK_DURATION, PVELB_SOAK_SEED and PVELB_SOAK_V.

// churnConfig sizes one run. Everything the run decides comes from the seed,
// so a failing seed replays the same operations (their timing against the
// controllers' is the only thing that differs).
type churnConfig struct {
	ops      int
	seed     uint64
	duration time.Duration
	long     bool
	pace     time.Duration // pause between operations
	// verbosity is the replicas' --v; the restore's conflict Events are
	// logged only from 3, which a long run may need to explain a violation.
	verbosity int
}

func churnConfigFromEnv(t *testing.T) churnConfig {
	t.Helper()
	c := churnConfig{ops: 300, duration: 90 * time.Second, pace: 120 * time.Millisecond, verbosity: 2}
	if v := os.Getenv("PVELB_SOAK_OPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("PVELB_SOAK_OPS=%q: want a positive count", v)
		}
		c.ops, c.long, c.duration = n, true, 6*time.Hour
	}
	if v := os.Getenv("PVELB_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("PVELB_SOAK_DURATION=%q: want a positive Go duration", v)
		}
		c.duration = d
	}
	if v := os.Getenv("PVELB_SOAK_PACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			t.Fatalf("PVELB_SOAK_PACE=%q: want a Go duration", v)
		}
		c.pace = d
	}
	if v := os.Getenv("PVELB_SOAK_V"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("PVELB_SOAK_V=%q: want a klog verbosity (0 or more)", v)
		}
		c.verbosity = n
	}
	c.seed = uint64(time.Now().UnixNano())
	if !c.long {
		// The run in `make test` is the same every time: a failure there is
		// reproducible without reading the log first.
		c.seed = 20260101
	}
	if v := os.Getenv("PVELB_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PVELB_SOAK_SEED=%q: want an unsigned integer", v)
		}
		c.seed = s
	}
	return c
}

// churnEvent is one line of the run's timeline: an operation the suite made,
// or a change it saw (Op "seen ...").
type churnEvent struct {
	At     time.Time
	N      int    // operation number; 0 for observations
	Op     string // "create", "delete", "kill-leader", "seen", ...
	Svc    string // "namespace/name" the event is about; "" for global ones
	Detail string
	// MayMove: the edit may move the Service's addresses (docs/loadbalancer.md):
	// type, class, sharing key, pool, requested addresses, ports of a Service
	// with a sharing key, deletion.
	MayMove bool
	Err     string
}

func (e churnEvent) String() string {
	s := e.At.Format("15:04:05.000") + " "
	if e.N > 0 {
		s += fmt.Sprintf("#%d ", e.N)
	}
	s += e.Op
	if e.Svc != "" {
		s += " " + e.Svc
	}
	if e.Detail != "" {
		s += " " + e.Detail
	}
	if e.Err != "" {
		s += " (error: " + e.Err + ")"
	}
	return s
}

// disruptive operations may leave no leader for a lease duration, which
// stretches the window any edit leaves open.
func (e churnEvent) disruptive() bool {
	return strings.HasPrefix(e.Op, "kill-") || strings.HasPrefix(e.Op, "stop-") || e.Op == "restart-apiserver"
}

// churnViolation is one broken invariant with the Services it involves.
type churnViolation struct {
	At   time.Time
	What string
	Svcs []string
	// Since, when set, is where the timeline starts (a minute before At
	// otherwise): a stuck deletion's cause came before the deletion.
	Since time.Time
}

// churnLog is the shared record of the run: events and violations.
type churnLog struct {
	mu         sync.Mutex
	events     []churnEvent
	violations []churnViolation
	// sending: operations that may move a Service's addresses, by
	// Service, from just before their call until their event is added.
	// The watcher can see an edit's effect before the call returns.
	sending map[string]time.Time
}

func (c *churnLog) add(e churnEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
	if e.N > 0 && e.MayMove {
		delete(c.sending, e.Svc)
	}
}

// sendingMove notes that e, an operation that may move e.Svc's addresses,
// is about to be sent (see churnLog.sending).
func (c *churnLog) sendingMove(e churnEvent) {
	if !e.MayMove {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sending == nil {
		c.sending = map[string]time.Time{}
	}
	c.sending[e.Svc] = e.At
}

func (c *churnLog) violate(v churnViolation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations = append(c.violations, v)
}

// lastMayMove is the time of the last operation that may move svc's
// addresses, and whether there was one.
func (c *churnLog) lastMayMove(svc string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.sending[svc]; ok {
		return at, true
	}
	for i := len(c.events) - 1; i >= 0; i-- {
		if e := c.events[i]; e.N > 0 && e.Svc == svc && e.MayMove {
			return e.At, true
		}
	}
	return time.Time{}, false
}

// excused tells whether a sharing violation is the window an edit leaves
// open: an operation on one of the Services just before it began, and it
// ended within churnEditWindow, or within churnEditWindow plus startWindow after a
// replica acquired the lease (acquired lists those times; a new leader syncs
// every Service first), or, when a replica was killed or stopped or the
// apiserver restarted around it, before a replica led again: without a
// leader nobody can close the window.
func (c *churnLog) excused(v Violation, acquired []time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	edited := false
	var disrupted time.Time
	// It began after the last poll that did not see it; polls fail while
	// the apiserver restarts, so that may be long before it was seen.
	began := v.First
	if !v.Unseen.IsZero() && v.Unseen.Before(began) {
		began = v.Unseen
	}
	for _, e := range c.events {
		if e.N == 0 {
			continue
		}
		if slices.Contains(v.Services, e.Svc) && !e.At.After(v.First) {
			// Just before it began; or before a leader change that came
			// just before it began: nobody acts on an edit between a
			// leader's end and the next one's first sync.
			if !e.At.Before(began.Add(-churnEditWindow - 2*churnPoll)) {
				edited = true
			}
			for _, a := range acquired {
				if !a.Before(e.At) && !a.After(v.First) && !began.After(a.Add(churnEditWindow+startWindow)) {
					edited = true
				}
			}
		}
		if e.disruptive() && e.At.After(began.Add(-10*time.Second)) && !e.At.After(v.Last) {
			disrupted = e.At
		}
	}
	if !edited || !v.Ended {
		return false
	}
	if v.Duration() <= churnEditWindow {
		return true
	}
	for _, a := range acquired {
		// A new leader syncs every Service once when it starts, and an
		// edit's Service waits its turn: however long ago the disruption
		// that made it leader (an apiserver restart can take 15 s).
		if !a.After(v.Last) && !v.Last.After(a.Add(churnEditWindow+startWindow)) {
			return true
		}
	}
	if disrupted.IsZero() {
		return false
	}
	for _, a := range acquired {
		if a.After(disrupted) {
			return !v.Last.After(a.Add(churnEditWindow + startWindow))
		}
	}
	// It ended before any replica led again: the user's next edit closed
	// it, and nobody was there to close it earlier.
	return true
}

// startWindow is what a new leader may take, besides churnEditWindow, to close an
// edit's window: it syncs every Service once when it starts.
const startWindow = 2 * time.Second

// churnEditWindow is how long an edit's window may stay open in the churn:
// twice the focused tests' editWindow. The churn fires about ten operations a
// second at one leader on a 2-core host shared with other work (load average
// 5-8), and pvelb's reaction to an edit, queued behind the others, measured
// 1.0-1.4 s there. The run reports how many windows outlasted editWindow.
const churnEditWindow = 2 * editWindow

// timeline prints the events about svcs and the global ones (replica kills,
// outages, pool edits) between from and to, in order.
func (c *churnLog) timeline(svcs []string, from, to time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, e := range c.events {
		if e.At.Before(from) || e.At.After(to) {
			continue
		}
		if e.Svc == "" || slices.Contains(svcs, e.Svc) {
			b.WriteString("    " + e.String() + "\n")
		}
	}
	return b.String()
}

// churnPoll is how often the monitor lists Services and samples the IPSets.
const churnPoll = 100 * time.Millisecond

// movableFor is how long after an edit that may move a Service's addresses
// the suite accepts a change of them: pvelb acts on the edit at once, but a
// leader killed just then leaves none for a lease duration, and a busy
// workqueue retries with backoff.
const movableFor = 30 * time.Second

// churnSvc is the suite's own model of a Service it manages: operations are
// chosen from it, never from what the cluster shows, so the seed alone
// decides them.
type churnSvc struct {
	ns, name string
	lb       bool
	class    bool
	key      string
	pool     string
	port     int32
}

func (s *churnSvc) id() string { return s.ns + "/" + s.name }

// ipsetWrite is one write the CCMs sent to a Proxmox IPSet.
type ipsetWrite struct {
	At             time.Time
	Method, Path   string
	CIDR, Comment  string
	HasComment     bool
	StatusReturned int
}

// writeRecorder serves the simulator on its own listener and records every
// IPSet write before passing it on unchanged (the simulator answers on the
// same connection, so Proxmox's reason phrases survive).
type writeRecorder struct {
	next http.Handler
	mu   sync.Mutex
	log  []ipsetWrite
}

func (w *writeRecorder) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || !strings.Contains(r.URL.Path, "/firewall/ipset") {
		w.next.ServeHTTP(rw, r)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	params := map[string]string{}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		for k, v := range m {
			params[k] = fmt.Sprint(v)
		}
	} else if q, err := url.ParseQuery(string(body)); err == nil {
		for k := range q {
			params[k] = q.Get(k)
		}
	}
	maps.Copy(params, func() map[string]string {
		out := map[string]string{}
		for k := range r.URL.Query() {
			out[k] = r.URL.Query().Get(k)
		}
		return out
	}())
	p, _ := url.PathUnescape(r.URL.EscapedPath())
	c, hasComment := params["comment"]
	rec := ipsetWrite{At: time.Now(), Method: r.Method, Path: p, CIDR: params["cidr"], Comment: c, HasComment: hasComment}
	sw := &statusWriter{ResponseWriter: rw}
	w.next.ServeHTTP(sw, r)
	rec.StatusReturned = sw.status
	w.mu.Lock()
	w.log = append(w.log, rec)
	w.mu.Unlock()
}

func (w *writeRecorder) writes() []ipsetWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

// statusWriter keeps the status code; it passes Hijack through, which the
// simulator uses for Proxmox's reason phrases.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// recordWrites puts a writeRecorder in front of the lab's simulator and
// points the cloud config at it.
func (l *Lab) recordWrites(t *testing.T) *writeRecorder {
	t.Helper()
	rec := &writeRecorder{next: l.PVE.Server}
	cert, caPEM, err := pvesim.SelfSignedTLS("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "recorder-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(rec)
	hs.EnableHTTP2 = false
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	hs.Config.ReadHeaderTimeout = 10 * time.Second
	hs.StartTLS()
	t.Cleanup(hs.Close)
	cfg, err := os.ReadFile(l.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(cfg), l.PVE.URL, hs.URL+"/api2/json", 1)
	s = strings.Replace(s, l.PVE.CAFile, caFile, 1)
	if err := os.WriteFile(l.ConfigFile, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return rec
}

// churnRun is one run's state.
type churnRun struct {
	t     *testing.T
	l     *Lab
	cfg   churnConfig
	rng   *rand.Rand
	log   *churnLog
	rec   *writeRecorder
	svcs  map[string]*churnSvc // by id, the Services that exist (in the model)
	names []string             // every name the run may use, "ns/name"

	replicas  []*Process // the two running replicas (a Deployment's pods)
	allMu     sync.Mutex
	all       []*Process // every replica ever started, for their logs; under allMu
	outageEnd time.Time  // zero when Proxmox is up
	mainSmall bool       // pool "main" shrunk
	sideSmall bool

	kills, stops, apiRestarts, outages, faults int
	// Written by the monitor, read after it stopped.
	changes, windows int           // address changes seen, edit windows (two Services on one address); changes under log.mu
	maxWindow        time.Duration // the longest edit window
	slowWindows      int           // edit windows longer than editWindow
}

const (
	churnPoolMain = "203.0.113.0/27"
	churnPoolSide = "203.0.113.64/28"
)

// TestChurn: see the comment at the top of this file.
func TestChurn(t *testing.T) {
	cfg := churnConfigFromEnv(t)
	l := lbLab(t, "firewall:\n  resyncPeriod: 3s\n")
	t.Logf("churn: seed %d (PVELB_SOAK_SEED=%d replays it), %d operations, at most %s", cfg.seed, cfg.seed, cfg.ops, cfg.duration)
	r := &churnRun{t: t, l: l, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)),
		log: &churnLog{}, svcs: map[string]*churnSvc{}}
	r.rec = l.recordWrites(t)
	l.createNamespace(t, "team")
	l.createPool(t, "main", map[string]any{"addresses": []any{churnPoolMain}})
	l.createPool(t, "side", map[string]any{"addresses": []any{churnPoolSide}, "autoAssign": false})
	for _, ns := range []string{"default", "team"} {
		for i := range 18 {
			r.names = append(r.names, fmt.Sprintf("%s/c%02d", ns, i))
		}
	}
	r.startReplica()
	r.startReplica()
	l.waitNodesInitialised(t)
	transitions0 := r.leaseTransitions()

	stopMonitor := r.monitor()
	start := time.Now()
	deadline := start.Add(cfg.duration)
	done := 0
	checkpoints := 0
	for n := 1; n <= cfg.ops && time.Now().Before(deadline); n++ {
		r.superviseReplicas()
		if !r.outageEnd.IsZero() && time.Now().After(r.outageEnd) {
			l.PVE.SetOutage(false)
			r.outageEnd = time.Time{}
			r.log.add(churnEvent{At: time.Now(), N: n, Op: "proxmox-up"})
		}
		opStart := time.Now()
		r.step(n)
		if d := time.Since(opStart); d > 10*time.Second {
			// Slow operations explain a slow run: a create waiting for a
			// terminating Service, an apiserver restart under load.
			t.Logf("churn: operation %d took %s", n, d.Round(100*time.Millisecond))
		}
		done = n
		if n%100 == 0 || n == cfg.ops {
			r.checkpoint(n)
			checkpoints++
			if cfg.long {
				// Progress for a run of hours (go test -v streams it).
				t.Logf("churn: %d operations in %s, %d leader changes, %d address changes seen", n,
					time.Since(start).Round(time.Second), r.leaseTransitions()-transitions0, r.monitorChanges())
			}
		}
		if r.failed() {
			break
		}
		time.Sleep(cfg.pace)
	}
	if done%100 != 0 && done != cfg.ops {
		r.checkpoint(done)
		checkpoints++
	}
	stopMonitor()
	elapsed := time.Since(start)
	transitions := r.leaseTransitions() - transitions0
	writes := r.rec.writes()
	t.Logf("churn: seed %d: %d operations in %s (%d checkpoints), %d replica kills, %d graceful leader stops, %d leader changes (Lease transitions), %d apiserver restarts, %d Proxmox outages, %d fault injections, %d IPSet writes recorded",
		cfg.seed, done, elapsed.Round(time.Second), checkpoints, r.kills, r.stops, transitions, r.apiRestarts, r.outages, r.faults, len(writes))
	ops := map[string]int{}
	r.log.mu.Lock()
	for _, e := range r.log.events {
		if e.N > 0 {
			op := e.Op
			if op == "edit" {
				op += " " + strings.FieldsFunc(e.Detail, func(c rune) bool { return c == '=' || c == '(' })[0]
			}
			ops[op]++
		}
	}
	r.log.mu.Unlock()
	var counts []string
	for _, k := range slices.Sorted(maps.Keys(ops)) {
		counts = append(counts, fmt.Sprintf("%s %d", k, ops[k]))
	}
	t.Logf("churn: operations: %s", strings.Join(counts, ", "))
	r.log.mu.Lock()
	for _, e := range r.log.events {
		if e.disruptive() || strings.HasPrefix(e.Op, "proxmox-outage") || e.Err != "" && e.N > 0 && !strings.Contains(e.Err, "not found") {
			t.Logf("churn: %s", e)
		}
	}
	r.log.mu.Unlock()
	t.Logf("churn: %d address changes seen, %d edit windows with two Services on one address (%d longer than %s, longest %s), %d violations",
		r.changes, r.windows, r.slowWindows, editWindow, r.maxWindow.Round(time.Millisecond), len(r.log.violations))
	r.report()
}

func (r *churnRun) monitorChanges() int {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return r.changes
}

func (r *churnRun) failed() bool {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return len(r.log.violations) > 0
}

// report fails the test with every violation, the seed and the timeline of
// the Services involved, and the replicas' log lines naming them.
func (r *churnRun) report() {
	r.log.mu.Lock()
	vs := slices.Clone(r.log.violations)
	r.log.mu.Unlock()
	if len(vs) == 0 {
		return
	}
	for i, v := range vs {
		if i == 10 {
			r.t.Errorf("... and %d more violations", len(vs)-10)
			break
		}
		var logs strings.Builder
		r.allMu.Lock()
		all := slices.Clone(r.all)
		r.allMu.Unlock()
		for _, p := range all {
			for line := range strings.SplitSeq(p.Output(), "\n") {
				for _, s := range v.Svcs {
					if strings.Contains(line, s) || strings.Contains(line, strings.Replace(s, "/", `" name="`, 1)) {
						logs.WriteString("    " + line + "\n")
						break
					}
				}
			}
		}
		since := v.At.Add(-60 * time.Second)
		if !v.Since.IsZero() && v.Since.Before(since) {
			since = v.Since
		}
		lines := strings.Split(logs.String(), "\n")
		if len(lines) > 60 {
			lines = append([]string{"    ..."}, lines[len(lines)-60:]...)
		}
		r.t.Errorf("churn violation (seed %d, PVELB_SOAK_SEED=%d replays it) at %s: %s\ntimeline of %v:\n%sreplica log lines:\n%s",
			r.cfg.seed, r.cfg.seed, v.At.Format("15:04:05.000"), v.What, v.Svcs,
			r.log.timeline(v.Svcs, since, v.At.Add(30*time.Second)), strings.Join(lines, "\n"))
	}
}

// startReplica starts one more pvelb-ccm replica.
func (r *churnRun) startReplica() {
	// A later --v overrides startCCM's own.
	p, _ := r.l.startCCM(r.t, "--v="+strconv.Itoa(r.cfg.verbosity))
	r.replicas = append(r.replicas, p)
	r.allMu.Lock()
	r.all = append(r.all, p)
	r.allMu.Unlock()
}

// acquisitions returns when any replica acquired the lease, in order, from
// the klog timestamps of their "Successfully acquired lease" lines.
func (r *churnRun) acquisitions() []time.Time {
	r.allMu.Lock()
	all := slices.Clone(r.all)
	r.allMu.Unlock()
	var out []time.Time
	now := time.Now()
	for _, p := range all {
		for line := range strings.SplitSeq(p.Output(), "\n") {
			if !strings.Contains(line, "Successfully acquired lease") || len(line) < 21 {
				continue
			}
			// "I1201 11:59:43.927400 ...": klog has no year; local time.
			at, err := time.ParseInLocation("0102 15:04:05.000000", line[1:21], time.Local)
			if err != nil {
				continue
			}
			out = append(out, at.AddDate(now.Year(), 0, 0))
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// superviseReplicas restarts replicas that exited (a leader that lost its
// lease exits, as in a pod), so two always run.
func (r *churnRun) superviseReplicas() {
	r.replicas = slices.DeleteFunc(r.replicas, (*Process).Exited)
	for len(r.replicas) < 2 {
		r.startReplica()
	}
}

// leader is the running replica that won the election: a replica wins at
// most once (it exits when it loses the lease).
func (r *churnRun) leader() *Process {
	for _, p := range r.replicas {
		if !p.Exited() && strings.Contains(p.Output(), "Successfully acquired lease") {
			return p
		}
	}
	return nil
}

func (r *churnRun) leaseTransitions() int {
	lease, err := r.l.Client.CoordinationV1().Leases("kube-system").Get(context.Background(), "pvelb-cloud-controller-manager", metav1.GetOptions{})
	if err != nil || lease.Spec.LeaseTransitions == nil {
		return 0
	}
	return int(*lease.Spec.LeaseTransitions)
}

// step makes operation n. In the short run the disruptions are scheduled (a
// few replica kills, one graceful leader change, one Proxmox outage); in the
// long run they are drawn like the rest.
func (r *churnRun) step(n int) {
	if !r.cfg.long {
		switch n {
		case 60, 180, 260:
			r.killReplica(n, true)
			return
		case 120:
			r.stopLeader(n)
			return
		case 150:
			r.outage(n)
			return
		}
	}
	x := r.rng.IntN(1000)
	if r.cfg.long {
		switch {
		case x < 12:
			r.killReplica(n, r.rng.IntN(4) != 0)
			return
		case x < 20:
			r.stopLeader(n)
			return
		case x < 24:
			r.outage(n)
			return
		case x < 27:
			r.restartAPIServer(n)
			return
		}
	}
	switch {
	case x < 40:
		r.fault(n)
	case x < 60:
		r.poolEdit(n)
	default:
		r.serviceOp(n)
	}
}

// serviceOp picks a Service name and does something to it.
func (r *churnRun) serviceOp(n int) {
	id := r.names[r.rng.IntN(len(r.names))]
	s := r.svcs[id]
	if s == nil {
		r.create(n, id)
		return
	}
	switch x := r.rng.IntN(100); {
	case x < 15:
		r.delete(n, s)
	case x < 35:
		r.flip(n, s)
	case x < 50:
		r.keyEdit(n, s)
	case x < 62:
		r.poolAnnotationEdit(n, s)
	case x < 80:
		r.portEdit(n, s)
	default:
		// An edit that must move nothing.
		r.patch(n, s, "note", fmt.Sprintf(`{"metadata":{"annotations":{"example.com/note":"%d"}}}`, n), false)
	}
}

var churnKeys = []string{"", "", "web", "db"}
var churnPorts = []int32{80, 443, 8080}

func (r *churnRun) create(n int, id string) {
	ns, name, _ := strings.Cut(id, "/")
	s := &churnSvc{ns: ns, name: name, lb: r.rng.IntN(5) != 0, class: r.rng.IntN(2) == 0,
		key: churnKeys[r.rng.IntN(len(churnKeys))], port: churnPorts[r.rng.IntN(len(churnPorts))]}
	if r.rng.IntN(6) == 0 {
		s.pool = "side"
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "p", Port: s.port, TargetPort: intstr.FromInt32(s.port), Protocol: corev1.ProtocolTCP}},
		},
	}
	if s.lb {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		if s.class {
			c := lbClass
			svc.Spec.LoadBalancerClass = &c
		}
	}
	if s.key != "" {
		svc.Annotations["pvelb.io/sharing-key"] = s.key
	}
	if s.pool != "" {
		svc.Annotations["pvelb.io/pool"] = s.pool
	}
	e := churnEvent{At: time.Now(), N: n, Op: "create", Svc: id, Detail: s.describe(), MayMove: true}
	r.log.sendingMove(e)
	_, err := r.l.Client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// The Service this run deleted under that name is still terminating
		// (its finalizer waits for the leader). Waiting for it keeps the
		// run's operations a function of the seed alone.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for ctx.Err() == nil {
			if _, err = r.l.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		if err == nil {
			r.stuck(id)
		}
		e.Detail += " (after waiting for the deleted one to go)"
		_, err = r.l.Client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	}
	if err != nil {
		e.Err = err.Error()
	} else {
		r.svcs[id] = s
	}
	r.log.add(e)
}

func (s *churnSvc) describe() string {
	typ := "ClusterIP"
	if s.lb {
		typ = "LoadBalancer"
		if s.class {
			typ += "(class)"
		}
	}
	return fmt.Sprintf("%s key=%q pool=%q port=%d", typ, s.key, s.pool, s.port)
}

func (r *churnRun) delete(n int, s *churnSvc) {
	e := churnEvent{At: time.Now(), N: n, Op: "delete", Svc: s.id(), MayMove: true}
	r.log.sendingMove(e)
	if err := r.l.Client.CoreV1().Services(s.ns).Delete(context.Background(), s.name, metav1.DeleteOptions{}); err != nil {
		e.Err = err.Error()
	}
	// Deleted even on error: a Service that may still be terminating is not
	// recreated under the same name until the apiserver says it is gone.
	delete(r.svcs, s.id())
	r.log.add(e)
}

// flip turns a LoadBalancer into a ClusterIP Service or back, drawing its
// class anew: the class is immutable while the type is LoadBalancer, so this
// is how a Service changes class.
func (r *churnRun) flip(n int, s *churnSvc) {
	if s.lb {
		if r.patch(n, s, "to-ClusterIP", `{"spec":{"type":"ClusterIP","loadBalancerClass":null,"allocateLoadBalancerNodePorts":null}}`, true) {
			s.lb = false
		}
		return
	}
	class := r.rng.IntN(2) == 0
	patch := `{"spec":{"type":"LoadBalancer"}}`
	what := "to-LoadBalancer"
	if class {
		patch = fmt.Sprintf(`{"spec":{"type":"LoadBalancer","loadBalancerClass":%q}}`, lbClass)
		what += "(class)"
	}
	if r.patch(n, s, what, patch, true) {
		s.lb, s.class = true, class
	}
}

func (r *churnRun) keyEdit(n int, s *churnSvc) {
	k := churnKeys[r.rng.IntN(len(churnKeys))]
	v := "null"
	if k != "" {
		v = strconv.Quote(k)
	}
	if r.patch(n, s, "sharing-key="+k, `{"metadata":{"annotations":{"pvelb.io/sharing-key":`+v+`}}}`, true) {
		s.key = k
	}
}

func (r *churnRun) poolAnnotationEdit(n int, s *churnSvc) {
	p, v := "", "null"
	if s.pool == "" {
		p, v = "side", `"side"`
	}
	if r.patch(n, s, "pool="+p, `{"metadata":{"annotations":{"pvelb.io/pool":`+v+`}}}`, true) {
		s.pool = p
	}
}

// portEdit changes the port; it may move the address only of a Service with
// a sharing key (its ports may now clash with a sharer's).
func (r *churnRun) portEdit(n int, s *churnSvc) {
	port := churnPorts[r.rng.IntN(len(churnPorts))]
	patch := fmt.Sprintf(`{"spec":{"ports":[{"name":"p","port":%d,"targetPort":%d,"protocol":"TCP"}]}}`, port, port)
	if r.patch(n, s, fmt.Sprintf("port=%d", port), patch, s.key != "") {
		s.port = port
	}
}

// patch applies a merge patch and records it; it reports whether it applied.
func (r *churnRun) patch(n int, s *churnSvc, what, patch string, mayMove bool) bool {
	e := churnEvent{At: time.Now(), N: n, Op: "edit", Svc: s.id(), Detail: what, MayMove: mayMove}
	r.log.sendingMove(e)
	_, err := r.l.Client.CoreV1().Services(s.ns).Patch(context.Background(), s.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		e.Err = err.Error()
	}
	r.log.add(e)
	return err == nil
}

// poolEdit shrinks or grows one of the pools. Shrinking moves nothing: a
// Service keeps an address its pool no longer holds.
func (r *churnRun) poolEdit(n int) {
	e := churnEvent{At: time.Now(), N: n, Op: "pool"}
	var name, cidr string
	if r.rng.IntN(2) == 0 {
		r.mainSmall = !r.mainSmall
		name, cidr = "main", churnPoolMain
		if r.mainSmall {
			cidr = "203.0.113.0/28"
		}
	} else {
		r.sideSmall = !r.sideSmall
		name, cidr = "side", churnPoolSide
		if r.sideSmall {
			cidr = "203.0.113.64/29"
		}
	}
	e.Detail = name + " " + cidr
	if _, err := dynamic.NewForConfigOrDie(r.l.CP.Config).Resource(ippoolGVR).Patch(context.Background(), name, types.MergePatchType,
		[]byte(fmt.Sprintf(`{"spec":{"addresses":[%q]}}`, cidr)), metav1.PatchOptions{}); err != nil {
		e.Err = err.Error()
	}
	r.log.add(e)
}

// killReplica SIGKILLs the leader (or the standby) and lets superviseReplicas
// start a new one before the next operation.
func (r *churnRun) killReplica(n int, leader bool) {
	p := r.leader()
	what := "kill-leader"
	if !leader || p == nil {
		what = "kill-standby"
		for _, q := range r.replicas {
			if q != p {
				p = q
				break
			}
		}
	}
	r.log.add(churnEvent{At: time.Now(), N: n, Op: what})
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	r.kills++
	r.superviseReplicas()
}

// stopLeader stops the leader gracefully (a rolling update): the standby
// takes over.
func (r *churnRun) stopLeader(n int) {
	p := r.leader()
	r.log.add(churnEvent{At: time.Now(), N: n, Op: "stop-leader"})
	if p == nil {
		return
	}
	p.Stop()
	r.stops++
	r.superviseReplicas()
}

// outage makes every Proxmox request fail for 2-6 s while operations go on.
func (r *churnRun) outage(n int) {
	d := time.Duration(2000+r.rng.IntN(4000)) * time.Millisecond
	r.log.add(churnEvent{At: time.Now(), N: n, Op: "proxmox-outage", Detail: d.String()})
	r.l.PVE.SetOutage(true)
	r.outageEnd = time.Now().Add(d)
	r.outages++
}

var churnFaultPaths = []string{"/cluster/firewall/ipset", "/nodes/", "/cluster/resources"}

// fault makes the next few matching Proxmox requests fail.
func (r *churnRun) fault(n int) {
	f := pvesim.Fault{PathPrefix: churnFaultPaths[r.rng.IntN(len(churnFaultPaths))], Count: 1 + r.rng.IntN(4),
		Status: []int{500, 503, 595}[r.rng.IntN(3)]}
	if r.rng.IntN(2) == 0 {
		f.Method = []string{"POST", "DELETE", "GET", "PUT"}[r.rng.IntN(4)]
	}
	r.log.add(churnEvent{At: time.Now(), N: n, Op: "proxmox-fault", Detail: fmt.Sprintf("%s %s x%d -> %d", f.Method, f.PathPrefix, f.Count, f.Status)})
	r.l.PVE.InjectFault(f)
	r.faults++
}

// restartAPIServer stops the lab's kube-apiserver and starts it again with
// the same command line (etcd keeps running, so nothing is lost). The
// harness does not offer a restart, so the process is found by its
// --cert-dir, which names the lab's own directory.
func (r *churnRun) restartAPIServer(n int) {
	e := churnEvent{At: time.Now(), N: n, Op: "restart-apiserver"}
	defer func() { r.log.add(e) }()
	pid, args, err := findAPIServer(r.l.CP.Dir)
	if err != nil {
		e.Err = err.Error()
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200 && processAlive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if processAlive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for i := 0; i < 100 && processAlive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	Start(r.t, args[0], args[1:]...)
	Eventually(r.t, 60*time.Second, "apiserver ready after its restart", func(ctx context.Context) error {
		_, err := r.l.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
	r.apiRestarts++
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited; its parent just has not reaped it yet.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// findAPIServer returns the pid and command line of the kube-apiserver whose
// --cert-dir is inside dir.
func findAPIServer(dir string) (int, []string, error) {
	want := "--cert-dir=" + filepath.Join(dir, "certs")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args, want) && processAlive(pid) {
			return pid, args, nil
		}
	}
	return 0, nil, fmt.Errorf("no kube-apiserver with %s", want)
}

// checkpoint ends the outage and the faults, waits for a leader and checks
// the IPSets hold exactly what the Services show.
func (r *churnRun) checkpoint(n int) {
	if !r.outageEnd.IsZero() {
		r.l.PVE.SetOutage(false)
		r.outageEnd = time.Time{}
		r.log.add(churnEvent{At: time.Now(), N: n, Op: "proxmox-up"})
	}
	r.l.PVE.ClearFaults()
	r.superviseReplicas()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		r.superviseReplicas()
		if last = r.converged(ctx); last == nil {
			r.terminatingTooLong()
			r.log.add(churnEvent{At: time.Now(), Op: "converged", Detail: fmt.Sprintf("after operation %d", n)})
			if d := 90*time.Second - time.Until(deadline(ctx)); d > 10*time.Second {
				r.t.Logf("churn: converged %s after operation %d", d.Round(100*time.Millisecond), n)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The cause came before the 90 s wait: the timeline starts 3 minutes back.
	r.log.violate(churnViolation{At: time.Now(), Since: time.Now().Add(-3 * time.Minute),
		What: fmt.Sprintf("IPSets not equal to what is held 90 s after operation %d: %v", n, last), Svcs: r.namesIn(last)})
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// terminatingTooLong reports Services deleted more than a minute ago that
// are still there once the IPSets converged (a leader is in place then).
func (r *churnRun) terminatingTooLong() {
	list, err := r.l.Client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, s := range list.Items {
		if s.DeletionTimestamp != nil && time.Since(s.DeletionTimestamp.Time) > time.Minute {
			r.stuck(svcKey(&s))
		}
	}
}

// stuck records a Service this run deleted that is still there a minute
// later: its finalizer is not removed, and its name can never be used again.
func (r *churnRun) stuck(id string) {
	ns, name, _ := strings.Cut(id, "/")
	s, err := r.l.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || s.DeletionTimestamp == nil {
		return
	}
	class := "none"
	if s.Spec.LoadBalancerClass != nil {
		class = *s.Spec.LoadBalancerClass
	}
	r.log.violate(churnViolation{At: time.Now(), Svcs: []string{id}, Since: s.DeletionTimestamp.Add(-2 * time.Minute), What: fmt.Sprintf(
		"%s deleted at %s still terminating %s later with a leader in place: type %s, class %s, finalizers %v, ingress %v",
		id, s.DeletionTimestamp.Format("15:04:05"), time.Since(s.DeletionTimestamp.Time).Round(time.Second),
		s.Spec.Type, class, s.Finalizers, s.Status.LoadBalancer.Ingress)})
}

// namesIn returns the run's Service names an error message mentions.
func (r *churnRun) namesIn(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, id := range r.names {
		if strings.Contains(err.Error(), id) {
			out = append(out, id)
		}
	}
	return out
}

// converged: the cluster set holds what the Services show (heldAsShown),
// each VM that may announce admits exactly the shown addresses, the excluded
// one none, and every user entry is in place.
func (r *churnRun) converged(ctx context.Context) error {
	list, err := r.l.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if err := heldAsShown(list.Items, r.l.PVE.IPSetEntries(pve.ClusterScope, clusterSet)); err != nil {
		return err
	}
	var shown []string
	for i := range list.Items {
		if pvelbMayServe(&list.Items[i]) {
			for _, in := range list.Items[i].Status.LoadBalancer.Ingress {
				shown = append(shown, in.IP)
			}
		}
	}
	slices.Sort(shown)
	shown = slices.Compact(shown)
	for _, vm := range labVMs {
		ours, _ := r.l.setEntries(vmScope(vm), vmSet)
		for i := range ours {
			ours[i] = bareIP(ours[i])
		}
		want := shown
		if vm.vmid == excludedNodeVM {
			want = nil
		}
		if !slices.Equal(ours, want) {
			return errorf("VM %d %s: pvelb entries %v, want %v", vm.vmid, vmSet, ours, want)
		}
	}
	return nil
}

// sharesAny: two comma-separated address lists have an address in common.
func sharesAny(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	for _, x := range strings.Split(a, ",") {
		if slices.Contains(strings.Split(b, ","), x) {
			return true
		}
	}
	return false
}

func bareIP(cidr string) string {
	return strings.TrimSuffix(strings.TrimSuffix(cidr, "/32"), "/128")
}

// mayMove: an operation that may move id's addresses came within movableFor.
func (r *churnRun) mayMove(id string, now time.Time) bool {
	at, ok := r.log.lastMayMove(id)
	return ok && now.Sub(at) <= movableFor
}

// monitor lists the Services and samples the IPSets every churnPoll until
// the returned stop is called, and records every violation it can tell at
// once. Sharing violations are judged when they end (an edit may open a
// window of up to editWindow).
func (r *churnRun) monitor() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	type shown struct {
		uid  types.UID
		ips  string
		seen time.Time
	}
	last := map[string]shown{}
	open := map[string]*Violation{}
	judge := func(v Violation) {
		r.windows++
		acquired := r.acquisitions()
		r.maxWindow = max(r.maxWindow, v.Duration())
		if v.Duration() > editWindow {
			r.slowWindows++
		}
		if v.Duration() > churnEditWindow {
			r.t.Logf("churn: edit window longer than %s (excused only next to a leader change): %s", churnEditWindow, v)
		}
		if !r.log.excused(v, acquired) {
			r.log.violate(churnViolation{At: v.First, What: "address shown twice: " + v.String(), Svcs: v.Services})
		}
	}
	writesSeen := 0
	go func() {
		defer close(done)
		tick := time.NewTicker(churnPoll)
		defer tick.Stop()
		var lastListed time.Time // the last poll whose list succeeded
		for {
			list, err := r.l.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
			now := time.Now()
			if err == nil {
				unseen := lastListed // the poll before this one that listed
				lastListed = now
				// Sharing.
				seen := map[string]bool{}
				for _, v := range addressViolations(list.Items) {
					// One window per address and pair, whatever the reason:
					// an edit may change the reason (keys differ, then no
					// key) while the window stays open.
					id := v.Address + "|" + strings.Join(v.Services, ",")
					seen[id] = true
					if o := open[id]; o != nil {
						o.Last = now
						if !strings.Contains(o.Why, v.Why) {
							o.Why += ", then " + v.Why
						}
					} else {
						v.First, v.Last, v.Unseen = now, now, unseen
						open[id] = &v
					}
				}
				for id, o := range open {
					if !seen[id] {
						o.Ended = true
						judge(*o)
						delete(open, id)
					}
				}
				// Moves.
				present := map[string]bool{}
				for i := range list.Items {
					s := &list.Items[i]
					id := svcKey(s)
					present[id] = true
					var ips []string
					for _, in := range s.Status.LoadBalancer.Ingress {
						ips = append(ips, in.IP)
					}
					cur := strings.Join(ips, ",")
					prev, ok := last[id]
					if ok && prev.uid != s.UID {
						prev, ok = shown{}, false
					}
					if ok && prev.ips == cur {
						continue
					}
					last[id] = shown{uid: s.UID, ips: cur, seen: now}
					if !ok && cur == "" {
						continue
					}
					r.log.mu.Lock()
					r.changes++
					r.log.mu.Unlock()
					r.log.add(churnEvent{At: now, Op: "seen", Svc: id, Detail: fmt.Sprintf("ingress [%s] (was [%s])", cur, prev.ips)})
					if prev.ips != "" {
						// An edit that breaks sharing may move either
						// partner: pvelb moves the edited one, but when a
						// leader change comes before its new status is
						// written, the new leader finds both on the address
						// and the older Service keeps it (docs/loadbalancer.md).
						partnerEdited := false
						for other, sh := range last {
							if other != id && sharesAny(sh.ips, prev.ips) && r.mayMove(other, now) {
								partnerEdited = true
							}
						}
						if !r.mayMove(id, now) && !partnerEdited {
							// The Services showing the old or the new
							// address belong in the timeline too: another
							// Service's edit may have pushed this one.
							svcs := []string{id}
							for j := range list.Items {
								for _, in := range list.Items[j].Status.LoadBalancer.Ingress {
									if in.IP != "" && (strings.Contains(","+prev.ips+",", ","+in.IP+",") || slices.Contains(ips, in.IP)) {
										svcs = append(svcs, svcKey(&list.Items[j]))
									}
								}
							}
							slices.Sort(svcs)
							r.log.violate(churnViolation{At: now, What: fmt.Sprintf("%s changed from [%s] to [%s] without an edit that may move it", id, prev.ips, cur), Svcs: slices.Compact(svcs)})
						}
					}
				}
				for id := range last {
					if !present[id] {
						delete(last, id)
					}
				}
			}
			// IPSet samples: user entries and each VM's own address stay,
			// every other entry is pvelb's.
			r.sampleIPSets(now)
			// Writes: every entry written is marked, no user entry or VM
			// address is deleted.
			w := r.rec.writes()
			for _, x := range w[writesSeen:] {
				r.checkWrite(x)
			}
			writesSeen = len(w)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		for _, id := range slices.Sorted(maps.Keys(open)) {
			judge(*open[id])
		}
	}
}

func (r *churnRun) sampleIPSets(now time.Time) {
	check := func(scope pve.Scope, set, userCIDR, userComment string) {
		var found bool
		for _, e := range r.l.PVE.IPSetEntries(scope, set) {
			if bareIP(e.CIDR) == userCIDR && e.Comment == userComment {
				found = true
			} else if !strings.HasPrefix(e.Comment, "pvelb:") {
				r.log.violate(churnViolation{At: now, What: fmt.Sprintf("unmarked entry %s %q in %s of %v", e.CIDR, e.Comment, set, scope)})
			}
		}
		if !found {
			r.log.violate(churnViolation{At: now, What: fmt.Sprintf("user entry %s %q missing from %s of %v", userCIDR, userComment, set, scope)})
		}
	}
	check(pve.ClusterScope, clusterSet, userClusterIP, userComment)
	for _, vm := range labVMs {
		check(vmScope(vm), vmSet, vm.ip, "node address")
	}
}

func (r *churnRun) checkWrite(w ipsetWrite) {
	// Paths: .../firewall/ipset/{name}[/{cidr}].
	_, rest, _ := strings.Cut(w.Path, "/firewall/ipset")
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	set := parts[0]
	cidr := w.CIDR
	if len(parts) > 1 {
		cidr = strings.Join(parts[1:], "/")
	}
	protected := func() bool {
		if set == clusterSet && bareIP(cidr) == userClusterIP {
			return true
		}
		for _, vm := range labVMs {
			if set == vmSet && strings.Contains(w.Path, "/qemu/"+strconv.Itoa(vm.vmid)+"/") && bareIP(cidr) == vm.ip {
				return true
			}
		}
		return false
	}
	desc := fmt.Sprintf("%s %s cidr=%q comment=%q (answered %d) at %s", w.Method, w.Path, w.CIDR, w.Comment, w.StatusReturned, w.At.Format("15:04:05.000"))
	switch {
	case w.Method == http.MethodDelete && len(parts) == 1 && (set == clusterSet || set == vmSet):
		r.log.violate(churnViolation{At: w.At, What: "deleted a user's IPSet: " + desc})
	case w.Method == http.MethodDelete && protected():
		r.log.violate(churnViolation{At: w.At, What: "deleted a user entry or a VM's own address: " + desc})
	case (w.Method == http.MethodPost || w.Method == http.MethodPut) && len(parts) == 1 && cidr != "" && !strings.HasPrefix(w.Comment, "pvelb:"):
		r.log.violate(churnViolation{At: w.At, What: "wrote an unmarked entry: " + desc})
	case w.Method == http.MethodPut && len(parts) > 1 && (protected() || (w.HasComment && !strings.HasPrefix(w.Comment, "pvelb:"))):
		r.log.violate(churnViolation{At: w.At, What: "rewrote a user entry or wrote an unmarked comment: " + desc})
	}
}
