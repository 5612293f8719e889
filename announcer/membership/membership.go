// Package membership lets announcers see each other directly over the node
// network, without the API server: every announcer sends a small UDP
// heartbeat to every other node's InternalIP every Interval, authenticated
// with HMAC-SHA256 under a shared secret, and considers a peer unheard when
// no valid heartbeat came for DeadAfter. A stopping announcer sends Leaving
// so its successors take over at once instead of waiting for the timeout.
//
// Each heartbeat also carries its sender's view (whom it hears, for whom it
// vouches), and a node may answer for VIPs only while it holds a quorum of
// the cluster (quorum.go). A node that starts, wakes from a stall or is cut
// off claims nothing until it has shown, through its peers' reports, that it
// may: the one-answerer rule holds through restarts, one-way and two-way
// partitions, pauses and clock jumps, not only in the steady state.
//
// Everyone who holds the secret can speak for any node name: the secret
// keeps other hosts out, it does not separate members from each other.
package membership

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
)

// Defaults: a 100 ms heartbeat and death after 3.5 missed ones put detection
// at 350-400 ms, well inside the one-second failover goal, while a single
// lost packet (or two) does not flap a node.
const (
	DefaultPort      = 7947
	DefaultInterval  = 100 * time.Millisecond
	DefaultDeadAfter = 350 * time.Millisecond
	DefaultMaxSkew   = 5 * time.Second
	// DefaultRestartGrace is how long a peer that said it is restarting
	// keeps its VIPs: a DaemonSet rollout replaces a pod in a few seconds
	// when the image is on the node. Until then its VIPs are unanswered for
	// new neighbour lookups only; clients already talking to it keep their
	// cache entries (TCP traffic confirms them) and their connections.
	DefaultRestartGrace = 10 * time.Second
	// MinSecretLen is the shortest accepted secret (bytes).
	MinSecretLen = 16
	// leavingRepeats: Leaving is sent a few times, spread over a few
	// milliseconds, because one UDP datagram can be lost.
	leavingRepeats = 3
	// minTriggerGap spaces out heartbeats sent on a change of view, so a
	// flapping link cannot turn them into a storm.
	minTriggerGap = 5 * time.Millisecond
)

// Config of one member.
type Config struct {
	// Node is this node's name (as in the Node object).
	Node string
	// Listen is the local UDP address, e.g. 0.0.0.0:7947 or 192.0.2.11:7947.
	Listen string
	// Secrets authenticate heartbeats: the first signs, every one is
	// accepted, so a secret can be rotated without splitting the cluster
	// (see LoadSecrets). Each has MinSecretLen+ bytes.
	Secrets [][]byte
	// Interval between heartbeats; DefaultInterval when zero.
	Interval time.Duration
	// DeadAfter without a valid message marks a peer unheard; DefaultDeadAfter when zero.
	DeadAfter time.Duration
	// HoldDown is how long after Run starts this node claims nothing, so it
	// has heard every live peer (and they it) before it may win; DeadAfter
	// plus Interval when zero.
	HoldDown time.Duration
	// MaxSkew is how far a message's timestamp may be from the local clock;
	// DefaultMaxSkew when zero. Node clocks are NTP-synchronised.
	MaxSkew time.Duration
	// RestartGrace is how long a peer that sent Restarting stays elected
	// while silent; DefaultRestartGrace when zero, negative to treat
	// Restarting as Leaving (take over at once).
	RestartGrace time.Duration
	// Registerer receives the metrics when set.
	Registerer prometheus.Registerer
}

// Peer is another node as the API shows it.
type Peer struct {
	// Addr is where its heartbeats go (InternalIP:port).
	Addr netip.AddrPort
	// Voter: it counts towards the quorum. A Node the API reports NotReady
	// (its kubelet silent past the grace period) is no voter, so a cluster
	// that really lost nodes regains a quorum once the API says so, while a
	// partition that leaves the kubelets reporting keeps the cut-off side in
	// its minority.
	Voter bool
}

// Membership is one announcer's view of which nodes may answer.
type Membership struct {
	cfg         Config
	conn        *net.UDPConn
	incarnation uint64
	metrics     *metrics
	changed     chan struct{}
	// sendNow asks Run for a heartbeat out of turn (the view changed).
	sendNow chan struct{}
	secrets atomic.Pointer[[][]byte]
	// epoch anchors validUntil in monotonic time.
	epoch time.Time
	// validUntil (nanoseconds since epoch) is when this node's permission
	// to answer lapses unless the tick loop renews it; see MayAnswer.
	validUntil atomic.Int64

	mu      sync.Mutex
	seq     uint64
	peers   map[string]*peer // by node name
	byHash  map[uint32]string
	leaving bool
	// peersKnown: SetPeers has been called. Before it this node would be
	// the only voter, a quorum of one.
	peersKnown bool
	started    time.Time // Run's start; zero before
	lastTick   time.Time
	stallUntil time.Time
	decision   Decision
	held       bool
	lastSent   time.Time
	vouchBuf   []string
	// unservable: hashes of what this node cannot serve (SetUnservable),
	// sorted, sent in every heartbeat.
	unservable []uint32
}

type peer struct {
	Peer
	incarnation uint64
	seq         uint64
	lastSeen    time.Time // local monotonic time of the last valid message
	heard       bool
	stale       bool // heard, but not within DeadAfter-Interval (see PeerState.Stale)
	hearsUs     bool
	electable   bool
	vouches     []string
	// unservable: hashes of what the peer said it cannot serve, sorted.
	unservable []uint32
	// reservedUntil: the peer said it is restarting; it stays elected
	// (PeerState.Reserved) until then or until it is back and electable.
	reservedUntil time.Time
}

// LoadSecrets reads the shared secrets from a file (a mounted Secret key):
// one per line, the first signs, every one is accepted. Rotating is three
// edits of the Secret, each waited out until the kubelet has refreshed the
// mounted file on every node (about a minute; the announcer re-reads it,
// no restart needed): "old\nnew", then "new\nold", then "new". Errors
// never contain a secret.
func LoadSecrets(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("membership secret: %w", err)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		s := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if len(s) == 0 {
			continue
		}
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("membership secret in %s, line %d: %d bytes, need at least %d", path, line, len(s), MinSecretLen)
		}
		out = append(out, bytes.Clone(s))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("membership secret in %s: empty", path)
	}
	return out, nil
}

func checkSecrets(secrets [][]byte) error {
	if len(secrets) == 0 {
		return errors.New("membership: no secret")
	}
	for i, s := range secrets {
		if len(s) < MinSecretLen {
			return fmt.Errorf("membership: secret %d has %d bytes, need at least %d", i+1, len(s), MinSecretLen)
		}
	}
	return nil
}

// New validates cfg and opens the UDP socket.
func New(cfg Config) (*Membership, error) {
	if cfg.Node == "" {
		return nil, errors.New("membership: node name is empty")
	}
	if len(cfg.Node) > maxNameLen {
		return nil, fmt.Errorf("membership: node name longer than %d", maxNameLen)
	}
	if err := checkSecrets(cfg.Secrets); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.RestartGrace == 0 {
		cfg.RestartGrace = DefaultRestartGrace
	}
	if cfg.HoldDown == 0 {
		cfg.HoldDown = cfg.DeadAfter + cfg.Interval
	}
	if cfg.Interval < 0 || cfg.DeadAfter <= cfg.Interval {
		return nil, fmt.Errorf("membership: deadAfter (%s) must exceed the interval (%s)", cfg.DeadAfter, cfg.Interval)
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("membership: listen address %q: %w", cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	m := &Membership{
		cfg:         cfg,
		conn:        conn,
		incarnation: uint64(time.Now().UnixNano()),
		metrics:     newMetrics(cfg.Registerer),
		changed:     make(chan struct{}, 1),
		sendNow:     make(chan struct{}, 1),
		epoch:       time.Now(),
		peers:       map[string]*peer{},
		byHash:      map[uint32]string{},
	}
	secrets := slices.Clone(cfg.Secrets)
	m.secrets.Store(&secrets)
	return m, nil
}

// SetSecrets replaces the accepted secrets (the first signs), for a rotation
// without restart.
func (m *Membership) SetSecrets(secrets [][]byte) error {
	if err := checkSecrets(secrets); err != nil {
		return err
	}
	s := slices.Clone(secrets)
	m.secrets.Store(&s)
	return nil
}

// LocalAddr is the bound UDP address.
func (m *Membership) LocalAddr() netip.AddrPort {
	return m.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Changes signals (coalesced) whenever the set of electable nodes changes.
func (m *Membership) Changes() <-chan struct{} { return m.changed }

// SetPeers replaces the set of other nodes, from the Node objects. A peer
// that stays keeps its state; new peers start unheard.
func (m *Membership) SetPeers(peers map[string]Peer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peersKnown = true
	for name := range m.peers {
		if _, ok := peers[name]; !ok {
			delete(m.peers, name)
		}
	}
	clear(m.byHash)
	for name, p := range peers {
		if name == m.cfg.Node {
			continue
		}
		h := nameHash(name)
		if other, ok := m.byHash[h]; ok {
			// Two names, one hash: their reports merge. Harmless for the
			// node names of one cluster in all but astronomically rare
			// cases; said once per membership change so it is seen.
			klog.InfoS("Two node names share a membership hash; their reports about each other merge", "node", name, "other", other)
		}
		m.byHash[h] = name
		if cur, ok := m.peers[name]; ok {
			cur.Peer = p
			if !p.Voter && !cur.reservedUntil.IsZero() {
				// Reported NotReady while restarting: the node itself
				// went down (a reboot whose kubelet shut down), so its
				// VIPs move now rather than at the end of the grace.
				cur.reservedUntil = time.Time{}
				klog.InfoS("Membership peer restarting in place is NotReady; its VIPs move", "peer", name)
			}
			continue
		}
		m.peers[name] = &peer{Peer: p}
	}
	m.recomputeLocked(time.Now())
}

// Electable reports whether node may win an election in this node's view.
func (m *Membership) Electable(node string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := slices.BinarySearch(m.decision.Electable, node)
	return ok
}

// ElectableNodes lists the nodes that may win an election, sorted.
func (m *Membership) ElectableNodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.decision.Electable)
}

// SetUnservable says what this node cannot answer for, as tokens the
// controller chooses (pool names: a pool naming an interface this node lacks
// or has down). Every heartbeat carries them hashed, so every node leaves
// this one out of those elections (CanServe) instead of electing a winner
// that cannot answer.
func (m *Membership) SetUnservable(tokens []string) {
	hs := make([]uint32, 0, len(tokens))
	for _, t := range tokens {
		hs = append(hs, nameHash(t))
	}
	slices.Sort(hs)
	hs = slices.Compact(hs)
	if len(hs) > maxUnservable {
		klog.ErrorS(nil, "Too many unservable pools to report; the rest are left out", "count", len(hs), "max", maxUnservable)
		hs = hs[:maxUnservable]
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.Equal(hs, m.unservable) {
		return
	}
	m.unservable = hs
	m.notify()
	m.kickSend()
}

// CanServe reports whether node can answer for token (see SetUnservable):
// this node from its own list, a peer from its last heartbeat.
func (m *Membership) CanServe(node, token string) bool {
	h := nameHash(token)
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.unservable
	if node != m.cfg.Node {
		p, ok := m.peers[node]
		if !ok {
			return true
		}
		list = p.unservable
	}
	_, found := slices.BinarySearch(list, h)
	return !found
}

// Heard reports whether a valid message from node arrived within DeadAfter.
func (m *Membership) Heard(node string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.peers[node]
	return ok && p.heard
}

// MayAnswer is the responders' fence: true only while this node is electable
// and its tick loop confirmed so within the last DeadAfter-Interval. A
// process that was frozen (SIGSTOP, a paused VM, a long stall) finds it false
// on waking, before any of its goroutines could answer with a stale view, and
// stays silent until it has heard its peers again; by then the others have
// either kept it (a short stall) or elected a successor.
func (m *Membership) MayAnswer() bool {
	return time.Since(m.epoch) < time.Duration(m.validUntil.Load())
}

// Run sends heartbeats, receives peers' messages and expires silent peers
// until ctx ends; then it closes the socket. Call Leave before cancelling ctx
// for a graceful stop.
func (m *Membership) Run(ctx context.Context) error {
	defer m.conn.Close()
	go func() {
		<-ctx.Done()
		// Unblocks the read loop.
		_ = m.conn.SetReadDeadline(time.Now())
	}()
	m.mu.Lock()
	m.started = time.Now()
	m.lastTick = m.started
	m.mu.Unlock()
	recvDone := make(chan struct{})
	go func() { defer close(recvDone); m.receive(ctx) }()

	m.send(Heartbeat)
	beat := time.NewTicker(m.cfg.Interval)
	defer beat.Stop()
	// Ticks four times per interval: expiry happens within a quarter
	// interval of DeadAfter, and MayAnswer is renewed often enough that a
	// busy scheduler does not close the fence.
	tick := time.NewTicker(m.cfg.Interval / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			<-recvDone
			return nil
		case <-beat.C:
			m.heartbeat()
		case <-m.sendNow:
			m.mu.Lock()
			soon := time.Since(m.lastSent) < minTriggerGap
			m.mu.Unlock()
			if soon {
				time.Sleep(minTriggerGap)
			}
			m.heartbeat()
		case now := <-tick.C:
			m.tick(now)
		}
	}
}

func (m *Membership) heartbeat() {
	m.mu.Lock()
	leaving := m.leaving
	m.mu.Unlock()
	if !leaving {
		m.send(Heartbeat)
	}
}

// Leave tells every peer that this node stops announcing, and stops
// heartbeats: successors take over without waiting for DeadAfter.
func (m *Membership) Leave() { m.stop(Leaving) }

// Restart tells every peer that this node stops answering now and will be
// back within their RestartGrace, and stops heartbeats: they keep this
// node's VIPs elected here instead of moving them twice (away, then back).
// The fence closes before the first message leaves, so this node is silent
// before any peer acts on the news.
func (m *Membership) Restart() { m.stop(Restarting) }

func (m *Membership) stop(kind Kind) {
	m.mu.Lock()
	m.leaving = true
	m.recomputeLocked(time.Now())
	m.mu.Unlock()
	for i := range leavingRepeats {
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		m.send(kind)
	}
}

func (m *Membership) send(kind Kind) {
	m.mu.Lock()
	m.seq++
	now := time.Now()
	m.lastSent = now
	msg := message{Kind: kind, Incarnation: m.incarnation, Seq: m.seq, Time: now, Node: m.cfg.Node,
		Electable: slices.Contains(m.decision.Electable, m.cfg.Node), Unservable: slices.Clone(m.unservable)}
	addrs := make([]netip.AddrPort, 0, len(m.peers))
	for name, p := range m.peers {
		addrs = append(addrs, p.Addr)
		e := entry{Hash: nameHash(name)}
		if p.heard {
			e.Flags |= entryHeard
			if p.hearsUs && p.electable {
				e.Flags |= entryVouch
			}
		}
		msg.Entries = append(msg.Entries, e)
	}
	m.mu.Unlock()
	slices.SortFunc(msg.Entries, func(a, b entry) int { return cmp.Compare(a.Hash, b.Hash) })
	secrets := *m.secrets.Load()
	b, err := msg.marshal(secrets[0])
	if err != nil {
		klog.ErrorS(err, "Cannot encode membership message")
		return
	}
	for _, a := range addrs {
		if _, err := m.conn.WriteToUDPAddrPort(b, a); err != nil {
			// A cut link or a peer's host down: expected, counted, not logged
			// at every heartbeat.
			m.metrics.sendErrors.Inc()
			klog.V(5).InfoS("Heartbeat send failed", "peer", a, "err", err)
			continue
		}
		m.metrics.sent.WithLabelValues(kind.String()).Inc()
	}
}

func (k Kind) String() string {
	switch k {
	case Heartbeat:
		return "heartbeat"
	case Leaving:
		return "leaving"
	case Restarting:
		return "restarting"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

func (m *Membership) receive(ctx context.Context) {
	buf := make([]byte, maxMessageLen)
	for {
		n, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			klog.V(4).InfoS("Membership read error", "err", err)
			continue
		}
		result := m.handle(buf[:n], time.Now())
		m.metrics.received.WithLabelValues(result).Inc()
		if result != resultOK {
			klog.V(4).InfoS("Dropped membership message", "from", from, "reason", result)
		}
	}
}

// Outcomes of one received message, the "result" label of the metric.
const (
	resultOK          = "ok"
	resultBadAuth     = "bad_auth"
	resultMalformed   = "malformed"
	resultReplay      = "replay"
	resultStale       = "stale"
	resultUnknownPeer = "unknown_peer"
)

func (m *Membership) handle(b []byte, now time.Time) string {
	msg, err := unmarshal(b, *m.secrets.Load()...)
	switch {
	case errors.Is(err, errBadAuth):
		return resultBadAuth
	case err != nil:
		return resultMalformed
	}
	if d := now.Sub(msg.Time); d > m.cfg.MaxSkew || d < -m.cfg.MaxSkew {
		return resultStale
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.noteStallLocked(now)
	p, ok := m.peers[msg.Node]
	if !ok || msg.Node == m.cfg.Node {
		return resultUnknownPeer
	}
	if msg.Incarnation < p.incarnation || (msg.Incarnation == p.incarnation && msg.Seq <= p.seq) {
		return resultReplay
	}
	p.incarnation, p.seq = msg.Incarnation, msg.Seq
	p.lastSeen = now
	heard := msg.Kind == Heartbeat
	if heard != p.heard {
		klog.InfoS("Membership peer changed", "peer", msg.Node, "heard", heard, "reason", msg.Kind.String())
	}
	reserve := msg.Kind == Restarting && m.cfg.RestartGrace > 0
	if reserve && p.reservedUntil.IsZero() {
		klog.InfoS("Membership peer restarting in place; keeping its VIPs there meanwhile", "peer", msg.Node, "grace", m.cfg.RestartGrace)
	}
	hearsUs, electable := false, msg.Electable && heard
	vouches := m.vouchBuf[:0]
	self := nameHash(m.cfg.Node)
	for _, e := range msg.Entries {
		if e.Hash == self {
			hearsUs = e.Flags&entryHeard != 0
			continue
		}
		if name, ok := m.byHash[e.Hash]; ok && e.Flags&entryVouch != 0 {
			vouches = append(vouches, name)
		}
	}
	m.vouchBuf = vouches
	if !slices.Equal(msg.Unservable, p.unservable) {
		// Not part of the decision, but of every election it feeds.
		p.unservable = slices.Clone(msg.Unservable)
		slices.Sort(p.unservable)
		m.notify()
	}
	// Senders list entries in hash order, so an unchanged view compares
	// equal and the steady state costs no decision (O(peers²) in vouches).
	if !reserve && p.reservedUntil.IsZero() && heard == p.heard && !p.stale && hearsUs == p.hearsUs && electable == p.electable && slices.Equal(vouches, p.vouches) {
		if m.heldLocked(now) != m.held {
			m.recomputeLocked(now)
		}
		return resultOK
	}
	p.heard, p.hearsUs, p.electable, p.stale = heard, hearsUs, electable, false
	p.vouches = slices.Clone(vouches)
	switch {
	case reserve:
		if p.reservedUntil.IsZero() {
			p.reservedUntil = now.Add(m.cfg.RestartGrace)
		}
	case msg.Kind == Leaving || (electable && hearsUs):
		// Gone for good, or back, answering and connected to this node
		// (electable here without the reservation, see Decide): the
		// reservation ends. Ending it on the peer's word alone, before it
		// hears this node, would drop it from this node's electable set
		// for a moment and move its VIPs away and back.
		if !p.reservedUntil.IsZero() && electable {
			klog.InfoS("Membership peer back from its restart", "peer", msg.Node, "after", m.cfg.RestartGrace-p.reservedUntil.Sub(now))
		}
		p.reservedUntil = time.Time{}
	}
	m.recomputeLocked(now)
	return resultOK
}

// tick expires silent peers, notices that this process itself was stalled,
// and renews or closes the answering fence.
func (m *Membership) tick(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.noteStallLocked(now)
	m.lastTick = now
	changed := false
	for name, p := range m.peers {
		if !p.reservedUntil.IsZero() && !now.Before(p.reservedUntil) {
			p.reservedUntil, changed = time.Time{}, true
			klog.InfoS("Membership peer did not come back from its restart in time; its VIPs move", "peer", name, "grace", m.cfg.RestartGrace)
		}
		if !p.heard {
			continue
		}
		silent := now.Sub(p.lastSeen)
		if silent > m.cfg.DeadAfter {
			p.heard, p.electable, p.stale, changed = false, false, false, true
			klog.InfoS("Membership peer changed", "peer", name, "heard", false, "reason", "timeout",
				"silentFor", silent.Round(time.Millisecond))
		} else if !p.stale && silent > m.cfg.DeadAfter-m.cfg.Interval {
			p.stale, changed = true, true
		}
	}
	if changed || m.heldLocked(now) != m.held {
		m.recomputeLocked(now)
		return
	}
	m.renewLocked(now)
}

// noteStallLocked notices that this process was frozen: a gap since the last
// tick longer than DeadAfter-Interval means our own heartbeats stopped long
// enough for peers to give up on us, so we hold back until reports sent
// after the stall have been heard for DeadAfter. Called from the tick loop
// and on every received message, whichever runs first after waking.
func (m *Membership) noteStallLocked(now time.Time) {
	if m.lastTick.IsZero() || now.Before(m.lastTick) {
		return
	}
	if gap := now.Sub(m.lastTick); gap > m.cfg.DeadAfter-m.cfg.Interval {
		m.stallUntil = now.Add(m.cfg.DeadAfter)
		m.lastTick = now
		m.metrics.stalls.Inc()
		klog.InfoS("This announcer was stalled; claiming nothing until it has heard its peers again",
			"stalledFor", gap.Round(time.Millisecond), "holdFor", m.cfg.DeadAfter)
	}
}

// heldLocked: this node must not answer now, whatever the quorum.
func (m *Membership) heldLocked(now time.Time) bool {
	return m.leaving || !m.peersKnown || m.started.IsZero() || now.Before(m.started.Add(m.cfg.HoldDown)) || now.Before(m.stallUntil)
}

// renewLocked extends or closes the answering fence from the current
// decision.
func (m *Membership) renewLocked(now time.Time) {
	if !m.leaving && slices.Contains(m.decision.Electable, m.cfg.Node) {
		m.validUntil.Store(int64(now.Sub(m.epoch) + m.cfg.DeadAfter - m.cfg.Interval))
	} else {
		m.validUntil.Store(0)
	}
}

// recomputeLocked runs the decision, publishes changes (Changes, a heartbeat
// out of turn so peers learn at once) and renews or closes the fence.
func (m *Membership) recomputeLocked(now time.Time) {
	m.held = m.heldLocked(now)
	states := make([]PeerState, 0, len(m.peers))
	heard, restarting := 0, 0
	for name, p := range m.peers {
		states = append(states, PeerState{Name: name, Voter: p.Voter, Heard: p.heard, Stale: p.stale,
			HearsUs: p.hearsUs, Electable: p.electable, Vouches: p.vouches, Reserved: !p.reservedUntil.IsZero()})
		if !p.reservedUntil.IsZero() {
			restarting++
		}
		if p.heard {
			heard++
		}
	}
	d := Decide(m.cfg.Node, m.held, states)
	prev := m.decision
	m.decision = d
	m.renewLocked(now)
	m.metrics.peersAlive.Set(float64(heard))
	m.metrics.peersRestarting.Set(float64(restarting))
	m.metrics.electable.Set(float64(len(d.Electable)))
	m.metrics.quorum.Set(boolGauge(d.Quorum))
	if prev.Quorum != d.Quorum {
		klog.InfoS("Membership quorum changed", "quorum", d.Quorum, "connected", d.Connected)
	}
	if !slices.Equal(prev.Electable, d.Electable) {
		klog.V(2).InfoS("Electable nodes changed", "electable", d.Electable)
		m.notify()
		m.kickSend()
	} else if !slices.Equal(prev.Connected, d.Connected) {
		m.kickSend()
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Membership) kickSend() {
	select {
	case m.sendNow <- struct{}{}:
	default:
	}
}

func (m *Membership) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

type metrics struct {
	peersAlive      prometheus.Gauge
	peersRestarting prometheus.Gauge
	electable       prometheus.Gauge
	quorum          prometheus.Gauge
	stalls          prometheus.Counter
	received        *prometheus.CounterVec
	sent            *prometheus.CounterVec
	sendErrors      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		peersAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_membership_peers_alive",
			Help: "Other announcers this one currently hears from.",
		}),
		peersRestarting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_membership_peers_restarting",
			Help: "Peers that said they restart in place and whose VIPs this announcer keeps on them until they are back or the restart grace ends.",
		}),
		electable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_membership_electable_nodes",
			Help: "Nodes that may win an election in this announcer's view (itself included when it may answer).",
		}),
		quorum: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_membership_quorum",
			Help: "1 while this announcer hears a quorum of the cluster both ways (it may answer), 0 while it steps down.",
		}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pvelb_announcer_membership_stalls_total",
			Help: "Times this announcer found itself stalled past what its peers tolerate (a paused VM, SIGSTOP, starvation) and held back.",
		}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pvelb_announcer_membership_messages_received_total",
			Help: "Membership messages received, by result (ok, bad_auth, malformed, replay, stale, unknown_peer).",
		}, []string{"result"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pvelb_announcer_membership_messages_sent_total",
			Help: "Membership messages sent, by kind.",
		}, []string{"kind"}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pvelb_announcer_membership_send_errors_total",
			Help: "Membership messages that could not be sent.",
		}),
	}
	for _, r := range []string{resultOK, resultBadAuth, resultMalformed, resultReplay, resultStale, resultUnknownPeer} {
		m.received.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.peersAlive, m.peersRestarting, m.electable, m.quorum, m.stalls, m.received, m.sent, m.sendErrors)
	}
	return m
}

// RegisterMetrics registers the membership metrics with reg without starting
// a Membership, so tests can list what pvelb-announcer exports.
func RegisterMetrics(reg prometheus.Registerer) { newMetrics(reg) }
