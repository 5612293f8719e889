package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// pingRecord is what a pinger saw: when each echo request (by sequence
// number) went out and when its reply came back.
type pingRecord struct {
	Sent map[int]time.Time
	Recv map[int]time.Time
}

// outage is the client's view of a failover.
type outage struct {
	// Gap is the longest time between two consecutive replies: how long the
	// VIP was unreachable for the client.
	Gap time.Duration
	// Lost counts echo requests that got no reply.
	Lost, Sent int
	// Recovered is the time from the fault to the first reply to a request
	// sent after it.
	Recovered time.Duration
}

// analyzeOutage reads a ping record around a fault injected at fault. It
// fails when no reply came after the fault: the VIP never came back.
func analyzeOutage(rec pingRecord, fault time.Time) (outage, error) {
	o := outage{Sent: len(rec.Sent)}
	var times []time.Time
	for seq := range rec.Sent {
		t, ok := rec.Recv[seq]
		if !ok {
			o.Lost++
			continue
		}
		times = append(times, t)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d > o.Gap {
			o.Gap = d
		}
	}
	first := time.Time{}
	for seq, sent := range rec.Sent {
		t, ok := rec.Recv[seq]
		if !ok || sent.Before(fault) {
			continue
		}
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	if first.IsZero() {
		return o, errors.New("no echo reply after the fault")
	}
	o.Recovered = first.Sub(fault)
	return o, nil
}

// pinger sends ICMP echo requests from a socket opened inside a network
// namespace, one per interval, and records replies.
type pinger struct {
	conn net.PacketConn
	dst  *net.IPAddr
	id   int

	mu  sync.Mutex
	rec pingRecord
}

func newPinger(conn net.PacketConn, dst netip.Addr) *pinger {
	return &pinger{
		conn: conn, dst: &net.IPAddr{IP: dst.AsSlice()}, id: os.Getpid() & 0xffff,
		rec: pingRecord{Sent: map[int]time.Time{}, Recv: map[int]time.Time{}},
	}
}

// run pings every interval until ctx ends and returns the record.
func (p *pinger) run(ctx context.Context, interval time.Duration) (pingRecord, error) {
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 1500)
		for {
			_ = p.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, from, err := p.conn.ReadFrom(buf)
			now := time.Now()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			if !ok || echo.ID != p.id || from.String() != p.dst.String() {
				continue
			}
			p.mu.Lock()
			if _, sent := p.rec.Sent[echo.Seq]; sent {
				if _, dup := p.rec.Recv[echo.Seq]; !dup {
					p.rec.Recv[echo.Seq] = now
				}
			}
			p.mu.Unlock()
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var sendErr error
	for seq := 1; seq < 1<<16; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: []byte("pvelb-lab")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			sendErr = err
			break
		}
		p.mu.Lock()
		p.rec.Sent[seq] = time.Now()
		p.mu.Unlock()
		// A send fails while the neighbour is unresolved (EHOSTUNREACH):
		// that is a lost ping, not an error of the pinger.
		_, _ = p.conn.WriteTo(b, p.dst)
		select {
		case <-ctx.Done():
			seq = 1 << 16
		case <-tick.C:
		}
	}
	// Replies to the last requests may still be on their way.
	time.Sleep(3 * interval)
	_ = p.conn.SetReadDeadline(time.Now())
	<-readDone
	p.mu.Lock()
	defer p.mu.Unlock()
	if sendErr != nil {
		return p.rec, fmt.Errorf("pinger: %w", sendErr)
	}
	return p.rec, nil
}

// received reports whether a request sent at or after t got its reply.
func (p *pinger) receivedAfter(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq, sent := range p.rec.Sent {
		if _, ok := p.rec.Recv[seq]; ok && !sent.Before(t) {
			return true
		}
	}
	return false
}
