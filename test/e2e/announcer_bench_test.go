package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/pvelb/pvelb/test/netlab"
)

const pingInterval = 10 * time.Millisecond

// watchTakeover reports when the first ARP packet claiming ip from a MAC
// other than old reaches h (the successor's gratuitous ARP or reply).
func watchTakeover(h *netlab.Host, ip netip.Addr, old net.HardwareAddr) (<-chan time.Time, func(), error) {
	var c *arp.Client
	if err := netlab.InNetns(h.Netns, func() error {
		ifi, err := net.InterfaceByName(h.Link)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	}); err != nil {
		return nil, nil, err
	}
	ch := make(chan time.Time, 1)
	go func() {
		for {
			p, _, err := c.Read()
			if err != nil {
				return
			}
			if p.SenderIP == ip && p.SenderHardwareAddr.String() != old.String() {
				ch <- time.Now()
				return
			}
		}
	}()
	return ch, func() { _ = c.Close() }, nil
}

// outage pings ip from h every 10 ms for d, calls event after lead, and
// returns the longest time without a reply (the client-visible failover
// time; 0 when no reply was missed) and the number of unanswered requests.
func outage(h *netlab.Host, ip netip.Addr, d, lead time.Duration, event func()) (time.Duration, int, error) {
	var conn *icmp.PacketConn
	if err := netlab.InNetns(h.Netns, func() (err error) {
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	id := os.Getpid() & 0xffff
	var mu sync.Mutex
	sentAt := map[int]time.Time{}
	got := map[int]time.Time{}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || e.ID != id {
				continue
			}
			mu.Lock()
			if _, dup := got[e.Seq]; !dup {
				got[e.Seq] = time.Now()
			}
			mu.Unlock()
		}
	}()
	dst := &net.IPAddr{IP: ip.AsSlice()}
	start := time.Now()
	fired := false
	for seq := 0; time.Since(start) < d; seq++ {
		if !fired && time.Since(start) >= lead {
			fired = true
			go event()
		}
		b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("pvelb")}}).Marshal(nil)
		mu.Lock()
		sentAt[seq] = time.Now()
		mu.Unlock()
		_, _ = conn.WriteTo(b, dst)
		time.Sleep(time.Until(start.Add(time.Duration(seq+1) * pingInterval)))
	}
	time.Sleep(300 * time.Millisecond) // late replies
	mu.Lock()
	defer mu.Unlock()
	// Outage: from the send time of the first unanswered request of the
	// longest unanswered run to the send time of the next answered one.
	var worst time.Duration
	lost, runStart := 0, -1
	for seq := 0; seq < len(sentAt); seq++ {
		if _, ok := got[seq]; !ok {
			lost++
			if runStart < 0 {
				runStart = seq
			}
			continue
		}
		if runStart >= 0 {
			worst = max(worst, sentAt[seq].Sub(sentAt[runStart]))
			runStart = -1
		}
	}
	if runStart >= 0 {
		return 0, lost, fmt.Errorf("no reply after the event (%d lost at the end)", len(sentAt)-runStart)
	}
	return worst, lost, nil
}

// BenchmarkAnnouncerFailover measures the failover a client pinging a VIP
// every 10 ms sees, over at least 20 runs of each kind, with three real
// announcers in a namespace lab: SIGKILL of the winner's announcer, a cut of
// the winner's link, and SIGTERM of a cordoned node (graceful handover). It reports the median
// and 90th percentile of two figures per kind: the outage (longest run of
// unanswered pings; after a SIGKILL of the announcer alone the old node
// still forwards, so traffic only stops when the node itself is cut off) and
// the takeover time (from the event to the successor's first claim of the
// VIP seen by the client).
func BenchmarkAnnouncerFailover(b *testing.B) {
	l := newAnnLab(b)
	for _, n := range l.net.Nodes {
		l.start(b, n, l.secret)
	}
	vip := netlab.VIP4(3)
	l.service(b, "bench", false, vip)
	l.answering(b, vip, 30*time.Second)
	runs := max(20, b.N)
	kinds := []struct {
		name    string
		event   func(w *netlab.Host)
		recover func(w *netlab.Host)
	}{
		{"sigkill", func(w *netlab.Host) { _ = syscall.Kill(-l.procs[w.Name].cmd.Process.Pid, syscall.SIGKILL) },
			func(w *netlab.Host) { <-l.procs[w.Name].done; l.start(b, w, l.secret) }},
		{"linkcut", func(w *netlab.Host) { _ = w.CutLink() },
			func(w *netlab.Host) { _ = w.RestoreLink() }},
		// A node that stays restarts its announcer in place (no takeover
		// at all); a handover is what a node that goes does: cordoned
		// first, as a drain does.
		{"sigterm", func(w *netlab.Host) { _ = syscall.Kill(-l.procs[w.Name].cmd.Process.Pid, syscall.SIGTERM) },
			func(w *netlab.Host) { <-l.procs[w.Name].done; l.cordon(b, w.Name, false); l.start(b, w, l.secret) }},
	}
	b.ResetTimer()
	for _, k := range kinds {
		var outs []time.Duration
		totalLost := 0
		var takeovers []time.Duration
		for i := range runs {
			w := l.answering(b, vip, 15*time.Second)
			if k.name == "sigterm" {
				l.cordon(b, w.Name, true)
			}
			// Settle: the client's entry points at the winner and the
			// restarted peer has been seen by everyone.
			time.Sleep(700 * time.Millisecond)
			claims, stop, err := watchTakeover(l.net.Client, vip, w.MAC)
			if err != nil {
				b.Fatal(err)
			}
			var at time.Time
			o, lost, err := outage(l.net.Client, vip, 2500*time.Millisecond, 500*time.Millisecond, func() { at = time.Now(); k.event(w) })
			if err != nil {
				stop()
				b.Fatalf("%s run %d: %v", k.name, i, err)
			}
			select {
			case c := <-claims:
				takeovers = append(takeovers, c.Sub(at))
			case <-time.After(2 * time.Second):
				stop()
				b.Fatalf("%s run %d: no successor claimed %s", k.name, i, vip)
			}
			stop()
			outs = append(outs, o)
			totalLost += lost
			k.recover(w)
		}
		slices.Sort(takeovers)
		b.ReportMetric(float64(takeovers[len(takeovers)/2].Milliseconds()), k.name+"-takeover-median-ms")
		b.ReportMetric(float64(takeovers[(len(takeovers)*9)/10].Milliseconds()), k.name+"-takeover-p90-ms")
		b.Logf("%s: takeover (successor's first claim at the client) median %s p90 %s max %s", k.name,
			takeovers[len(takeovers)/2], takeovers[(len(takeovers)*9)/10], takeovers[len(takeovers)-1])
		slices.Sort(outs)
		med, p90 := outs[len(outs)/2], outs[(len(outs)*9)/10]
		b.ReportMetric(float64(med.Milliseconds()), k.name+"-outage-median-ms")
		b.ReportMetric(float64(p90.Milliseconds()), k.name+"-outage-p90-ms")
		b.Logf("%s: %d runs, outage median %s p90 %s max %s, %d pings lost in total", k.name, len(outs), med, p90, outs[len(outs)-1], totalLost)
	}
}
