package l2state

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.10", "192.0.2.10"},
		{"::ffff:192.0.2.10", "192.0.2.10"},
		{"2001:db8::10", "2001:db8::10"},
		{"fe80::1%eth0", "fe80::1"},
	} {
		if got := Key(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("Key(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name              string
		have, want        []netip.Addr
		wantWon, wantLost []netip.Addr
	}{
		{name: "empty"},
		{name: "first win", want: addrs("192.0.2.2", "192.0.2.1"), wantWon: addrs("192.0.2.1", "192.0.2.2")},
		{name: "all lost", have: addrs("192.0.2.1", "2001:db8::1"), wantLost: addrs("192.0.2.1", "2001:db8::1")},
		{name: "unchanged", have: addrs("192.0.2.1"), want: addrs("192.0.2.1")},
		{
			name: "swap one", have: addrs("192.0.2.1", "192.0.2.2"), want: addrs("192.0.2.2", "192.0.2.3"),
			wantWon: addrs("192.0.2.3"), wantLost: addrs("192.0.2.1"),
		},
		{name: "duplicates in want", want: addrs("2001:db8::1", "2001:db8::1"), wantWon: addrs("2001:db8::1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			won, lost := Diff(tc.have, tc.want)
			if !slices.Equal(won, tc.wantWon) || !slices.Equal(lost, tc.wantLost) {
				t.Errorf("Diff = won %v lost %v, want won %v lost %v", won, lost, tc.wantWon, tc.wantLost)
			}
		})
	}
}

// recorder collects what a Set asked of its hooks.
type recorder struct {
	mu              sync.Mutex
	won, lost, sent []netip.Addr
	closed          bool
}

func (r *recorder) hooks(keep func(netip.Addr) bool) Hooks {
	add := func(s *[]netip.Addr) func(netip.Addr) {
		return func(ip netip.Addr) { r.mu.Lock(); *s = append(*s, ip); r.mu.Unlock() }
	}
	return Hooks{Keep: keep, Announce: add(&r.sent), Won: add(&r.won), Lost: add(&r.lost),
		Closed: func() { r.closed = true }}
}

func (r *recorder) sentCount(ip netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sent {
		if s == ip {
			n++
		}
	}
	return n
}

func TestReplaceKeepsOneFamilyAndRunsHooks(t *testing.T) {
	var rec recorder
	s := New([]time.Duration{0, 0, 0}, rec.hooks(netip.Addr.Is4))
	defer s.Close()
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	s.Replace([]netip.Addr{netip.MustParseAddr("::ffff:192.0.2.10"), v6})
	if !s.Serving(v4) || s.Serving(v6) {
		t.Fatalf("Serving(%s)=%v Serving(%s)=%v, want true false", v4, s.Serving(v4), v6, s.Serving(v6))
	}
	deadline := time.Now().Add(2 * time.Second)
	for rec.sentCount(v4) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("burst sent %d packets for %s, want 3", rec.sentCount(v4), v4)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Replace(nil)
	if s.Serving(v4) {
		t.Fatal("still serving after Replace(nil)")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.won, []netip.Addr{v4}) || !slices.Equal(rec.lost, []netip.Addr{v4}) {
		t.Errorf("hooks saw won %v lost %v, want [%s] each", rec.won, rec.lost, v4)
	}
	if slices.Contains(rec.sent, v6) {
		t.Errorf("announced %s, which Keep rejects", v6)
	}
}

func TestLosingAVIPStopsItsBurst(t *testing.T) {
	var rec recorder
	s := New([]time.Duration{0, 150 * time.Millisecond}, rec.hooks(netip.Addr.Is6))
	ip := netip.MustParseAddr("2001:db8::20")
	s.Replace([]netip.Addr{ip})
	deadline := time.Now().Add(time.Second)
	for rec.sentCount(ip) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("first takeover packet never sent")
		}
		time.Sleep(2 * time.Millisecond)
	}
	s.Replace(nil)
	time.Sleep(300 * time.Millisecond)
	if n := rec.sentCount(ip); n != 1 {
		t.Errorf("sent %d packets, want the burst cut after 1", n)
	}
	s.Close()
	if !rec.closed {
		t.Error("Closed hook did not run")
	}
	if s.Context().Err() == nil {
		t.Error("Context still live after Close")
	}
}

func TestClaimedSince(t *testing.T) {
	ours, notOurs := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	for _, tc := range []struct {
		name  string
		claim netip.Addr
		ask   netip.Addr
		since time.Duration // ask about claims after now+since
		want  bool
	}{
		{name: "claim after t", claim: ours, ask: ours, since: -time.Second, want: true},
		{name: "mapped form of the same VIP", claim: netip.MustParseAddr("::ffff:198.51.100.1"), ask: ours, since: -time.Second, want: true},
		{name: "claim before t", claim: ours, ask: ours, since: time.Second, want: false},
		{name: "claim of a VIP we do not serve is ignored", claim: notOurs, ask: notOurs, since: -time.Second, want: false},
		{name: "no claim", ask: ours, since: -time.Second, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(nil, Hooks{Keep: netip.Addr.Is4, Announce: func(netip.Addr) {}})
			defer s.Close()
			s.Replace([]netip.Addr{ours})
			if tc.claim.IsValid() {
				s.NoteClaim(tc.claim)
			}
			if got := s.ClaimedSince(tc.ask, time.Now().Add(tc.since)); got != tc.want {
				t.Errorf("ClaimedSince = %v, want %v", got, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestReadLoopRetriesTransientErrorsOnly(t *testing.T) {
	fatal := errors.New("socket gone")
	for _, tc := range []struct {
		name string
		errs []error // returned by successive reads; then fatal
	}{
		{"timeout", []error{timeoutErr{}}},
		{"link down", []error{&net.OpError{Op: "read", Err: os.NewSyscallError("recvfrom", syscall.ENETDOWN)}}},
		{"nil", []error{nil, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(nil, Hooks{Keep: netip.Addr.Is4, Announce: func(netip.Addr) {}})
			defer s.Close()
			reads := 0
			err := s.ReadLoop(context.Background(), func(time.Time) error { return nil }, func() error {
				reads++
				if reads <= len(tc.errs) {
					return tc.errs[reads-1]
				}
				return fatal
			})
			if !errors.Is(err, fatal) || reads != len(tc.errs)+1 {
				t.Fatalf("ReadLoop = %v after %d reads, want %v after %d", err, reads, fatal, len(tc.errs)+1)
			}
		})
	}
}

func TestReadLoopStopsOnCloseAndCancel(t *testing.T) {
	for _, viaClose := range []bool{false, true} {
		s := New(nil, Hooks{Keep: netip.Addr.Is4, Announce: func(netip.Addr) {}})
		ctx, cancel := context.WithCancel(context.Background())
		unblock := make(chan struct{})
		var once sync.Once
		setDeadline := func(time.Time) error { once.Do(func() { close(unblock) }); return nil }
		done := make(chan error, 1)
		go func() {
			done <- s.ReadLoop(ctx, setDeadline, func() error { <-unblock; return timeoutErr{} })
		}()
		if viaClose {
			s.Close()
		} else {
			cancel()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("viaClose=%v: ReadLoop = %v, want nil", viaClose, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("viaClose=%v: ReadLoop did not stop", viaClose)
		}
		cancel()
		s.Close()
	}
}

// TestFenceSilencesAnswersAndBursts: with the fence closed (the membership
// withdrew this node's permission, or the process just woke from a freeze)
// a won VIP is neither answered nor announced; reopening restores both.
func TestFenceSilencesAnswersAndBursts(t *testing.T) {
	var mu sync.Mutex
	var announced []time.Duration
	start := time.Now()
	s := New([]time.Duration{0, 40 * time.Millisecond, 80 * time.Millisecond}, Hooks{
		Keep: func(netip.Addr) bool { return true },
		Announce: func(netip.Addr) {
			mu.Lock()
			announced = append(announced, time.Since(start))
			mu.Unlock()
		},
	})
	defer s.Close()
	var open sync.Mutex
	allowed := false
	s.SetFence(func() bool { open.Lock(); defer open.Unlock(); return allowed })
	vip := netip.MustParseAddr("192.0.2.200")
	s.Replace([]netip.Addr{vip})
	time.Sleep(20 * time.Millisecond)
	if s.Serving(vip) {
		t.Fatal("serving with the fence closed")
	}
	open.Lock()
	allowed = true
	open.Unlock()
	if !s.Serving(vip) {
		t.Fatal("not serving with the fence open")
	}
	time.Sleep(120 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	// The first packet (at 0) fell while closed; the later two went out.
	if len(announced) != 2 {
		t.Fatalf("announced at %v, want the two packets after the fence opened", announced)
	}
	s.SetFence(nil)
	if !s.Serving(vip) {
		t.Fatal("not serving without a fence")
	}
}

// TestReassertAnswersForeignClaims: a claim on a VIP served for at least
// ReassertAfter is answered with one takeover packet, at most once per
// ReassertAfter, only while allowed, and never for VIPs not served.
func TestReassertAnswersForeignClaims(t *testing.T) {
	var mu sync.Mutex
	count := 0
	s := New(nil, Hooks{ // no takeover burst: only re-assertions announce
		Keep:     func(netip.Addr) bool { return true },
		Announce: func(netip.Addr) { mu.Lock(); count++; mu.Unlock() },
	})
	defer s.Close()
	announced := func() int { time.Sleep(20 * time.Millisecond); mu.Lock(); defer mu.Unlock(); return count }
	vip, other := netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("192.0.2.201")
	allowed := true
	s.SetReassert(func() bool { return allowed })
	s.Replace([]netip.Addr{vip})
	if !s.NoteClaim(vip) || announced() != 0 {
		t.Fatal("a claim right after winning was re-asserted (it may be a handover in progress)")
	}
	if s.NoteClaim(other) {
		t.Fatal("a claim on an address not served counted as ours")
	}
	// Pretend the VIP has been served long enough.
	s.mu.Lock()
	s.ips[vip].since = time.Now().Add(-2 * ReassertAfter)
	s.mu.Unlock()
	s.NoteClaim(vip)
	if n := announced(); n != 1 {
		t.Fatalf("re-assertions after a claim on a settled VIP: %d, want 1", n)
	}
	s.NoteClaim(vip)
	if n := announced(); n != 1 {
		t.Fatalf("a second claim within ReassertAfter was re-asserted too (%d)", n)
	}
	s.mu.Lock()
	s.ips[vip].reassert = time.Now().Add(-2 * ReassertAfter)
	s.mu.Unlock()
	allowed = false
	s.NoteClaim(vip)
	if n := announced(); n != 1 {
		t.Fatalf("re-asserted while not allowed (%d)", n)
	}
}

// TestYieldOnClaim: during a handover a VIP stops being answered the moment
// another MAC claims it, while the others are still answered.
func TestYieldOnClaim(t *testing.T) {
	s := New(nil, Hooks{Keep: func(netip.Addr) bool { return true }, Announce: func(netip.Addr) {}})
	defer s.Close()
	a, b := netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("192.0.2.201")
	s.Replace([]netip.Addr{a, b})
	t0 := time.Now()
	s.NoteClaim(a)
	if !s.Serving(a) {
		t.Fatal("a claim outside a handover stopped the answering")
	}
	s.YieldOnClaim()
	s.NoteClaim(a)
	if s.Serving(a) || !s.Serving(b) || !s.ClaimedSince(a, t0) || s.ClaimedSince(b, t0) {
		t.Fatalf("after a's claim: serving a=%v b=%v, claimed a=%v b=%v", s.Serving(a), s.Serving(b), s.ClaimedSince(a, t0), s.ClaimedSince(b, t0))
	}
}
