// Package membership lets announcers see each other directly over the node
// network, without the API server: every announcer sends a small UDP
// heartbeat to every other node's InternalIP every Interval, authenticated
// with HMAC-SHA256 under a shared secret, and considers a peer dead when no
// valid heartbeat came for DeadAfter. A stopping announcer sends Leaving so
// its successors take over at once instead of waiting for the timeout.
//
// Everyone who holds the secret can speak for any node name: the secret
// keeps other hosts out, it does not separate members from each other.
package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
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
	// MinSecretLen is the shortest accepted secret (bytes).
	MinSecretLen = 16
	// leavingRepeats: Leaving is sent a few times, spread over a few
	// milliseconds, because one UDP datagram can be lost.
	leavingRepeats = 3
)

// Config of one member.
type Config struct {
	// Node is this node's name (as in the Node object).
	Node string
	// Listen is the local UDP address, e.g. 0.0.0.0:7947 or 192.0.2.11:7947.
	Listen string
	// Secret is shared by all announcers of the cluster (MinSecretLen+ bytes).
	Secret []byte
	// Interval between heartbeats; DefaultInterval when zero.
	Interval time.Duration
	// DeadAfter without a valid message marks a peer dead; DefaultDeadAfter when zero.
	DeadAfter time.Duration
	// MaxSkew is how far a message's timestamp may be from the local clock;
	// DefaultMaxSkew when zero. Node clocks are NTP-synchronised.
	MaxSkew time.Duration
	// Registerer receives the metrics when set.
	Registerer prometheus.Registerer
}

// Membership is one announcer's view of which nodes are alive.
type Membership struct {
	cfg         Config
	conn        *net.UDPConn
	incarnation uint64
	metrics     *metrics
	changed     chan struct{}

	mu      sync.Mutex
	seq     uint64
	peers   map[string]*peer // by node name
	leaving bool
}

type peer struct {
	addr        netip.AddrPort
	incarnation uint64
	seq         uint64
	lastSeen    time.Time // local monotonic time of the last valid message
	left        bool
	alive       bool // as last published
}

// LoadSecret reads the shared secret from a file (a mounted Secret key);
// one trailing newline is ignored. Errors never contain the secret.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("membership secret: %w", err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("membership secret in %s: %d bytes, need at least %d", path, len(b), MinSecretLen)
	}
	return b, nil
}

// New validates cfg and opens the UDP socket.
func New(cfg Config) (*Membership, error) {
	if cfg.Node == "" {
		return nil, errors.New("membership: node name is empty")
	}
	if len(cfg.Node) > maxNameLen {
		return nil, fmt.Errorf("membership: node name longer than %d", maxNameLen)
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("membership: secret has %d bytes, need at least %d", len(cfg.Secret), MinSecretLen)
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
		peers:       map[string]*peer{},
	}
	return m, nil
}

// LocalAddr is the bound UDP address.
func (m *Membership) LocalAddr() netip.AddrPort {
	return m.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Changes signals (coalesced) whenever the set of live nodes changes.
func (m *Membership) Changes() <-chan struct{} { return m.changed }

// SetPeers replaces the set of other nodes (name -> heartbeat address), from
// the Node objects' InternalIPs. A peer that stays keeps its state; new peers
// start dead until they are heard from.
func (m *Membership) SetPeers(peers map[string]netip.AddrPort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for name, p := range m.peers {
		if _, ok := peers[name]; !ok {
			delete(m.peers, name)
			changed = changed || p.alive
		}
	}
	for name, addr := range peers {
		if name == m.cfg.Node {
			continue
		}
		if p, ok := m.peers[name]; ok {
			p.addr = addr
			continue
		}
		m.peers[name] = &peer{addr: addr}
	}
	if changed {
		m.notify()
	}
	m.metrics.peersAlive.Set(float64(m.aliveCountLocked()))
}

// Alive reports whether node is alive: this node itself until Leave, others
// while their heartbeats arrive.
func (m *Membership) Alive(node string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if node == m.cfg.Node {
		return !m.leaving
	}
	p, ok := m.peers[node]
	return ok && p.alive
}

// AliveNodes lists the live nodes, this one included (until Leave), sorted.
func (m *Membership) AliveNodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	if !m.leaving {
		out = append(out, m.cfg.Node)
	}
	for name, p := range m.peers {
		if p.alive {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
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
	recvDone := make(chan struct{})
	go func() { defer close(recvDone); m.receive(ctx) }()

	m.send(Heartbeat)
	beat := time.NewTicker(m.cfg.Interval)
	defer beat.Stop()
	// Expiry runs four times per interval, so detection happens within a
	// quarter interval of DeadAfter.
	expire := time.NewTicker(m.cfg.Interval / 4)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			<-recvDone
			return nil
		case <-beat.C:
			m.mu.Lock()
			leaving := m.leaving
			m.mu.Unlock()
			if !leaving {
				m.send(Heartbeat)
			}
		case <-expire.C:
			m.expire(time.Now())
		}
	}
}

// Leave tells every peer that this node stops announcing, and stops
// heartbeats: successors take over without waiting for DeadAfter.
func (m *Membership) Leave() {
	m.mu.Lock()
	m.leaving = true
	m.mu.Unlock()
	m.notify()
	for i := range leavingRepeats {
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		m.send(Leaving)
	}
}

func (m *Membership) send(kind Kind) {
	m.mu.Lock()
	m.seq++
	msg := message{Kind: kind, Incarnation: m.incarnation, Seq: m.seq, Time: time.Now(), Node: m.cfg.Node}
	addrs := make([]netip.AddrPort, 0, len(m.peers))
	for _, p := range m.peers {
		addrs = append(addrs, p.addr)
	}
	m.mu.Unlock()
	b, err := msg.marshal(m.cfg.Secret)
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
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

func (m *Membership) receive(ctx context.Context) {
	buf := make([]byte, 1024)
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
	msg, err := unmarshal(b, m.cfg.Secret)
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
	p, ok := m.peers[msg.Node]
	if !ok || msg.Node == m.cfg.Node {
		return resultUnknownPeer
	}
	if msg.Incarnation < p.incarnation || (msg.Incarnation == p.incarnation && msg.Seq <= p.seq) {
		return resultReplay
	}
	p.incarnation, p.seq = msg.Incarnation, msg.Seq
	p.lastSeen = now
	p.left = msg.Kind == Leaving
	if alive := !p.left; alive != p.alive {
		p.alive = alive
		klog.InfoS("Membership peer changed", "peer", msg.Node, "alive", alive, "reason", msg.Kind.String())
		m.metrics.peersAlive.Set(float64(m.aliveCountLocked()))
		m.notify()
	}
	return resultOK
}

func (m *Membership) expire(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, p := range m.peers {
		if p.alive && now.Sub(p.lastSeen) > m.cfg.DeadAfter {
			p.alive = false
			klog.InfoS("Membership peer changed", "peer", name, "alive", false, "reason", "timeout",
				"silentFor", now.Sub(p.lastSeen).Round(time.Millisecond))
			m.metrics.peersAlive.Set(float64(m.aliveCountLocked()))
			m.notify()
		}
	}
}

func (m *Membership) aliveCountLocked() int {
	n := 0
	for _, p := range m.peers {
		if p.alive {
			n++
		}
	}
	return n
}

func (m *Membership) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

type metrics struct {
	peersAlive prometheus.Gauge
	received   *prometheus.CounterVec
	sent       *prometheus.CounterVec
	sendErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		peersAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pvelb_announcer_membership_peers_alive",
			Help: "Other announcers this one currently hears from.",
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
		reg.MustRegister(m.peersAlive, m.received, m.sent, m.sendErrors)
	}
	return m
}
