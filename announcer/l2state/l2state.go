// Package l2state keeps the bookkeeping the ARP and NDP responders share:
// which VIPs this node won on one interface, the takeover burst each newly
// won VIP gets, and when another node last claimed one of them. It sends no
// packets itself: arp and ndp pass in what differs (the family they serve,
// the packet a burst sends, per-VIP state such as NDP's multicast groups).
package l2state

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// TakeoverSchedule is when takeover packets go out after a VIP is won: one at
// once for the fast path, two more to cover a lost frame or a switch port
// that was still learning.
var TakeoverSchedule = []time.Duration{0, 500 * time.Millisecond, time.Second}

// Hooks are the protocol-specific parts of a Set. Won, Lost and Closed run
// under the Set's lock so that state they keep per VIP changes in step with
// the set; Announce runs outside it, from the burst's goroutine.
type Hooks struct {
	// Keep says which addresses (in Key form) the responder serves; the
	// others passed to Replace are ignored.
	Keep func(netip.Addr) bool
	// Announce sends one takeover packet for ip.
	Announce func(ip netip.Addr)
	// Won and Lost, if set, run when ip enters or leaves the set.
	Won, Lost func(ip netip.Addr)
	// Closed, if set, runs when the set is closed.
	Closed func()
}

// Set is the won VIPs of one responder. It is safe for concurrent use.
type Set struct {
	schedule []time.Duration
	hooks    Hooks

	// fence, when set, must allow every answer and takeover packet: the
	// membership's MayAnswer, so a process waking from a freeze cannot
	// answer with a stale view before its controller caught up.
	fence atomic.Pointer[func() bool]

	// reassert, when set, allows answering another MAC's claim on a VIP
	// this node serves with one takeover packet (see NoteClaim).
	reassert atomic.Pointer[func() bool]
	// yield: a claim by another MAC ends this node's answering for that
	// VIP at once (a graceful handover, see YieldOnClaim).
	yield atomic.Bool

	mu  sync.Mutex
	ips map[netip.Addr]*entry // won VIPs
	// claims: when another node last claimed a VIP we serve (its takeover
	// packet), so a stopping node knows its successor is live.
	claims map[netip.Addr]time.Time
	ctx    context.Context
	stop   context.CancelFunc
}

// entry is one VIP of the set.
type entry struct {
	cancel   context.CancelFunc // stops its takeover burst
	since    time.Time
	reassert time.Time // last re-assertion
}

// ReassertAfter is how long a VIP must have been served, and how long
// since the last re-assertion, before another MAC's claim on it is answered
// with a takeover packet: longer than every handover pvelb makes itself
// (claims are delayed, leavers wait for their successor's claim), so a
// re-assertion answers a foreign responder or a split view, never a
// legitimate successor, and at most once a second.
const ReassertAfter = time.Second

// New returns an empty set whose newly won VIPs get a burst on schedule.
func New(schedule []time.Duration, h Hooks) *Set {
	ctx, stop := context.WithCancel(context.Background())
	return &Set{
		schedule: schedule, hooks: h,
		ips: map[netip.Addr]*entry{}, claims: map[netip.Addr]time.Time{},
		ctx: ctx, stop: stop,
	}
}

// Key is the form VIPs are stored and looked up in: packets and Services
// may carry IPv4-mapped IPv6 or zoned forms of the same address.
func Key(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// Diff returns the addresses of want missing from have (won) and those of
// have missing from want (lost), each sorted and without duplicates.
func Diff(have, want []netip.Addr) (won, lost []netip.Addr) {
	inHave := make(map[netip.Addr]bool, len(have))
	for _, ip := range have {
		inHave[ip] = true
	}
	inWant := make(map[netip.Addr]bool, len(want))
	for _, ip := range want {
		if !inHave[ip] && !inWant[ip] {
			won = append(won, ip)
		}
		inWant[ip] = true
	}
	seen := make(map[netip.Addr]bool, len(have))
	for _, ip := range have {
		if !inWant[ip] && !seen[ip] {
			lost = append(lost, ip)
		}
		seen[ip] = true
	}
	slices.SortFunc(won, netip.Addr.Compare)
	slices.SortFunc(lost, netip.Addr.Compare)
	return won, lost
}

// Replace makes ips (those Keep accepts) the won set. Lost VIPs stop their
// burst at once; won ones start one.
func (s *Set) Replace(ips []netip.Addr) {
	var want []netip.Addr
	for _, ip := range ips {
		if ip = Key(ip); s.hooks.Keep(ip) {
			want = append(want, ip)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	have := make([]netip.Addr, 0, len(s.ips))
	for ip := range s.ips {
		have = append(have, ip)
	}
	won, lost := Diff(have, want)
	for _, ip := range lost {
		s.ips[ip].cancel()
		delete(s.ips, ip)
		if s.hooks.Lost != nil {
			s.hooks.Lost(ip)
		}
	}
	for _, ip := range won {
		if s.hooks.Won != nil {
			s.hooks.Won(ip)
		}
		ctx, cancel := context.WithCancel(s.ctx)
		s.ips[ip] = &entry{cancel: cancel, since: time.Now()}
		go s.burst(ctx, ip)
	}
}

func (s *Set) burst(ctx context.Context, ip netip.Addr) {
	start := time.Now()
	for _, at := range s.schedule {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		if s.fenceOpen() {
			s.hooks.Announce(ip)
		}
	}
}

// SetFence makes every answer and takeover packet depend on f (nil: none).
func (s *Set) SetFence(f func() bool) {
	if f == nil {
		s.fence.Store(nil)
		return
	}
	s.fence.Store(&f)
}

func (s *Set) fenceOpen() bool {
	f := s.fence.Load()
	return f == nil || (*f)()
}

// Serving reports whether ip is answered now: in the set, with the fence
// open.
func (s *Set) Serving(ip netip.Addr) bool {
	s.mu.Lock()
	_, ok := s.ips[Key(ip)]
	s.mu.Unlock()
	return ok && s.fenceOpen()
}

// SetReassert allows re-asserting VIPs against foreign claims while f
// returns true (nil: never); see NoteClaim.
func (s *Set) SetReassert(f func() bool) {
	if f == nil {
		s.reassert.Store(nil)
		return
	}
	s.reassert.Store(&f)
}

// NoteClaim records that another link-layer address claimed ip now (the
// caller checked it is not ours) and reports whether ip is one of ours. An
// owner that has served ip for ReassertAfter, and may re-assert, answers
// with one takeover packet (at most once per ReassertAfter), so clients
// that followed a foreign claim come back.
func (s *Set) NoteClaim(ip netip.Addr) bool {
	ip = Key(ip)
	now := time.Now()
	s.mu.Lock()
	w, ok := s.ips[ip]
	if !ok {
		s.mu.Unlock()
		return false
	}
	s.claims[ip] = now
	if s.yield.Load() {
		w.cancel()
		delete(s.ips, ip)
		if s.hooks.Lost != nil {
			s.hooks.Lost(ip)
		}
		s.mu.Unlock()
		return true
	}
	due := now.Sub(w.since) >= ReassertAfter && now.Sub(w.reassert) >= ReassertAfter
	if due {
		w.reassert = now
	}
	s.mu.Unlock()
	if f := s.reassert.Load(); due && f != nil && (*f)() && s.fenceOpen() {
		go s.hooks.Announce(ip)
	}
	return true
}

// YieldOnClaim makes every later claim by another MAC end the answering of
// that VIP at once, for a graceful handover: each VIP stops being answered
// the moment its successor claims it, not when the last one is claimed.
func (s *Set) YieldOnClaim() { s.yield.Store(true) }

// ClaimedSince reports whether another node claimed ip after t.
func (s *Set) ClaimedSince(ip netip.Addr, t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[Key(ip)]
	return ok && c.After(t)
}

// Context ends when the set is closed, so a responder's read loop can stop
// with it.
func (s *Set) Context() context.Context { return s.ctx }

// linkDownPause bounds how fast ReadLoop retries after ENETDOWN.
const linkDownPause = 50 * time.Millisecond

// ReadLoop calls readOne until ctx ends or the set is closed, either of
// which unblocks a pending read through setReadDeadline; then it returns nil.
// readOne returns only socket errors. Read timeouts, and the ENETDOWN a
// packet socket reports once when its interface goes down, are retried:
// the link may come back and this node is still the elected one, so the
// responder must not die with it. Any other error ends the loop.
func (s *Set) ReadLoop(ctx context.Context, setReadDeadline func(time.Time) error, readOne func() error) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.ctx.Done():
		case <-done:
			return
		}
		_ = setReadDeadline(time.Now())
	}()
	for {
		err := readOne()
		if err == nil {
			continue
		}
		if ctx.Err() != nil || s.ctx.Err() != nil {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if errors.Is(err, syscall.ENETDOWN) {
			select {
			case <-ctx.Done():
			case <-s.ctx.Done():
			case <-time.After(linkDownPause):
			}
			continue
		}
		return err
	}
}

// Close stops every burst and empties the set.
func (s *Set) Close() {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ips = map[netip.Addr]*entry{}
	if s.hooks.Closed != nil {
		s.hooks.Closed()
	}
}
