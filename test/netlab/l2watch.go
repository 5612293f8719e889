package netlab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Monitor records every ARP packet and IPv6 neighbor solicitation and
// advertisement that crosses one interface, with the kernel's receive time,
// until Close. Its queries may run while it records; they see a snapshot.
// Times of all monitors are on this process's monotonic clock, so events of
// two monitors can be compared.
type Monitor struct {
	lab   *Lab
	where string // "bridge br0" or "node1 eth0", for errors
	start time.Time
	conn  *packet.Conn

	mu      sync.Mutex
	events  Events
	changed chan struct{} // closed and replaced on every new event
	drops   uint64
	err     error // why capturing stopped early

	closing   atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
}

// WatchBridge monitors the lab's bridge. The bridge is made promiscuous, so
// it sees every frame any port sends (unicast replies between two hosts as
// well as broadcasts), once, in the order the bridge handled them; a host
// whose cable is out (CutLink) is not heard, as on a real switch. The lab
// closes the monitor on Close, if the caller has not.
func (l *Lab) WatchBridge() (*Monitor, error) {
	return l.watch(l.Switch, BridgeName, "bridge "+BridgeName, true)
}

// Watch monitors the host's lab link: what the host sends and what the
// bridge delivers to it, which is what its neighbour cache learns from.
func (h *Host) Watch() (*Monitor, error) {
	return h.lab.watch(h.Netns, h.Link, h.Name+" "+h.Link, false)
}

// ndpFilter passes only ARP and ICMPv6 neighbor solicitations and
// advertisements, so that a busy data path (HTTP through a VIP) neither wakes
// the monitor nor overflows its socket buffer and drops what it is for.
var ndpFilter = func() []bpf.RawInstruction {
	const (
		etherTypeOff  = 12
		nextHeaderOff = 14 + 6
		icmpTypeOff   = 14 + 40
	)
	prog, err := bpf.Assemble([]bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: etherTypeOff, Size: 2},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_ARP, SkipTrue: 7},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IPV6, SkipFalse: 5},
		/* 3 */ bpf.LoadAbsolute{Off: nextHeaderOff, Size: 1},
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_ICMPV6, SkipFalse: 3},
		/* 5 */ bpf.LoadAbsolute{Off: icmpTypeOff, Size: 1},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpLessThan, Val: 135, SkipTrue: 1}, // NS is 135
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpLessOrEqual, Val: 136, SkipTrue: 1}, // NA is 136
		/* 8 */ bpf.RetConstant{Val: 0},
		/* 9 */ bpf.RetConstant{Val: 1 << 16},
	})
	if err != nil {
		panic(err)
	}
	return prog
}()

// monitorBuffer is a Monitor's socket receive buffer: about 10 000 frames,
// two seconds of the busiest lab traffic.
const monitorBuffer = 8 << 20

func (l *Lab) watch(netns, ifname, where string, promisc bool) (*Monitor, error) {
	m := &Monitor{lab: l, where: where, changed: make(chan struct{}), done: make(chan struct{})}
	var rc syscall.RawConn
	err := InNetns(netns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// The filter is attached before bind, so nothing else is queued.
		if m.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: ndpFilter}); err != nil {
			return err
		}
		if rc, err = m.conn.SyscallConn(); err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
			// The default buffer (about 200 KiB, some 300 frames) lasts
			// 60 ms when a client probes 50 VIPs every 20 ms, shorter than
			// this reader may wait for a CPU on a loaded machine; a dropped
			// frame is a hole in the timeline. FORCE needs CAP_NET_ADMIN,
			// which a lab has; without it the default stays.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, monitorBuffer)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
		}
		// A bridge passes frames between two other ports up to itself only
		// when promiscuous.
		if promisc {
			return m.conn.SetPromiscuous(true)
		}
		return nil
	})
	if err != nil {
		if m.conn != nil {
			_ = m.conn.Close()
		}
		return nil, fmt.Errorf("watching %s in %s: %w", where, netns, err)
	}
	m.start = time.Now()
	go m.capture(rc)
	l.onClose(func() { _ = m.Close() })
	return m, nil
}

func (m *Monitor) capture(rc syscall.RawConn) {
	defer close(m.done)
	buf := make([]byte, 2048)
	oob := make([]byte, unix.CmsgSpace(16))
	for {
		var n, oobn int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if !m.closing.Load() {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
			}
			return
		}
		ev, ok := parseFrame(buf[:n], receiveTime(oob[:oobn], time.Now()))
		if !ok {
			continue
		}
		m.mu.Lock()
		m.events = append(m.events, ev)
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}
}

// receiveTime returns when the kernel received the frame, from the
// SO_TIMESTAMPNS control message, rather than when this goroutine got to it:
// on a loaded machine reads come in bursts, and burst times would make
// answers far apart look simultaneous. The kernel's stamp is wall-clock
// time; it is turned into a delay before now, so the result keeps now's
// monotonic reading and a clock step cannot reorder a timeline. Without a
// plausible stamp the read time is used.
func receiveTime(oob []byte, now time.Time) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return now
	}
	for _, msg := range msgs {
		if msg.Header.Level != unix.SOL_SOCKET || msg.Header.Type != unix.SCM_TIMESTAMPNS || len(msg.Data) < 16 {
			continue
		}
		// struct timespec of a 64-bit kernel: tv_sec and tv_nsec.
		sec := int64(binary.NativeEndian.Uint64(msg.Data[0:8]))
		nsec := int64(binary.NativeEndian.Uint64(msg.Data[8:16]))
		if d := now.Sub(time.Unix(sec, nsec)); d >= 0 && d < time.Second {
			return now.Add(-d)
		}
	}
	return now
}

// Start is when the monitor started recording; Timeline offsets count from it.
func (m *Monitor) Start() time.Time { return m.start }

// Events returns a copy of what has been recorded so far.
func (m *Monitor) Events() Events {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

// Wait returns the first recorded event, from the start of the recording,
// that match accepts, waiting for one until ctx ends or the monitor stops.
func (m *Monitor) Wait(ctx context.Context, match func(Event) bool) (Event, error) {
	for i := 0; ; {
		m.mu.Lock()
		for ; i < len(m.events); i++ {
			if match(m.events[i]) {
				ev := m.events[i]
				m.mu.Unlock()
				return ev, nil
			}
		}
		changed, err := m.changed, m.err
		m.mu.Unlock()
		if err != nil {
			return Event{}, fmt.Errorf("monitor on %s: %w", m.where, err)
		}
		select {
		case <-changed:
		case <-m.done:
			return Event{}, fmt.Errorf("monitor on %s stopped before a matching event", m.where)
		case <-ctx.Done():
			return Event{}, fmt.Errorf("monitor on %s: no matching event: %w", m.where, ctx.Err())
		}
	}
}

// AnswerMACs is Events.AnswerMACs on what has been recorded so far.
func (m *Monitor) AnswerMACs(vip netip.Addr, from, to time.Time) []net.HardwareAddr {
	return m.Events().AnswerMACs(vip, from, to)
}

// Gratuitous is Events.Gratuitous on what has been recorded so far.
func (m *Monitor) Gratuitous(vip netip.Addr) map[string][]time.Time {
	return m.Events().Gratuitous(vip)
}

// SplitAnswers is Events.SplitAnswers on what has been recorded so far.
func (m *Monitor) SplitAnswers(vip netip.Addr, overlap time.Duration) []Split {
	return m.Events().SplitAnswers(vip, overlap)
}

// Timeline is Events.Timeline on what has been recorded so far, with
// offsets from Start and the lab's host names.
func (m *Monitor) Timeline(vip netip.Addr) string {
	return m.Events().Timeline(vip, m.start, m.lab.macNames())
}

// Close stops recording; the recorded events stay available. It returns why
// capturing failed, or that the kernel dropped frames the monitor's socket
// had no room for (then the timeline has holes an invariant check could
// miss a violation in). It is safe to call more than once.
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		// Read before closing: the counters go with the socket.
		if st, err := m.conn.Stats(); err == nil {
			m.mu.Lock()
			m.drops += uint64(st.Drops)
			m.mu.Unlock()
		}
		m.closing.Store(true)
		_ = m.conn.Close()
		<-m.done
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	if m.err != nil {
		errs = append(errs, fmt.Errorf("monitor on %s: %w", m.where, m.err))
	}
	if m.drops > 0 {
		errs = append(errs, fmt.Errorf("monitor on %s: the kernel dropped %d frames", m.where, m.drops))
	}
	return errors.Join(errs...)
}

// macNames maps every host's MAC (MAC.String()) to its name.
func (l *Lab) macNames() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := map[string]string{}
	// Close forgets l.hosts; the nodes and the client stay known.
	for _, h := range append(slices.Clone(l.hosts), append(slices.Clone(l.Nodes), l.Client)...) {
		if h != nil {
			names[h.MAC.String()] = h.Name
		}
	}
	return names
}
