package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pvelb/pvelb/test/netlab"
)

const (
	// rolloutVIPs is how many IPv4 VIPs a rollout is watched on: enough
	// that every node owns several, so every restart hands some over and
	// takes some back.
	rolloutVIPs = 50
	// rolloutPinged bounds how many VIPs the client also pings: the probes
	// already cover all of them on the wire, the pings add what a client
	// with a neighbour cache sees, and a few suffice for that.
	rolloutPinged = 5
	// rolloutSettle is the pause after a restarted announcer reports quorum
	// before the next node's turn (a DaemonSet's minReadySeconds).
	rolloutSettle = 500 * time.Millisecond
	// rolloutPerNode budgets one node's turn (handover, exit, start, quorum,
	// settle; about 0.7 s here), with room for a loaded machine: the pings
	// run for a count fixed in advance, so the observation is sized from
	// this and a slower rollout fails instead of going partly unobserved.
	rolloutPerNode = 3 * time.Second
	// rolloutLead and rolloutTail are steady state observed before the
	// first SIGTERM and after the last node settled, so the last takeover
	// burst (1 s, l2state.TakeoverSchedule) and any failback are seen whole.
	rolloutLead = time.Second
	rolloutTail = 3 * time.Second
	// ownerCheck is how long after a gratuitous ARP its sender may start
	// answering probes and count as the owner (a claim delayed by the
	// takeover's own ordering); ownerBefore how recent its last answer
	// before the packet must be (five probe rounds).
	ownerCheck  = 300 * time.Millisecond
	ownerBefore = 100 * time.Millisecond
)

// BenchmarkAnnouncerRollingRestart restarts every announcer of a 3- and a
// 10-node cluster in turn, as a DaemonSet rollout does (SIGTERM, wait for
// exit, start, wait for membership quorum, settle), while the client probes
// 50 VIPs every 20 ms and pings a few every 10 ms, and reports per rollout:
//
//   - longest-outage-ms: the largest gap between consecutive ARP replies
//     (from any node) for one VIP on the bridge, from the last reply before
//     the first SIGTERM to the end of the observation. Only replies count:
//     a gratuitous ARP tells caches where to go but answers no probe.
//     Nothing is subtracted, so with probes every 20 ms a perfect rollout
//     still shows about 20 ms.
//   - pings-lost: echo requests without a reply, over all pinged VIPs.
//   - non-owner-gratuitous: gratuitous ARP for a VIP from a MAC that is not
//     the only one answering the probes for that VIP in the following
//     300 ms (a claim by a node that is not, or not alone, the owner).
//   - split-ms: the longest time two nodes answered one VIP at once
//     (netlab SplitAnswers with a 60 ms window, as the transitions tests).
//   - vip-moves: changes of the MAC answering a VIP, summed over the VIPs;
//     each resets the connections kube-proxy holds for that VIP. Every
//     announcer restarts in place, so the goal is 0.
//
// Each figure is the worst over b.N rollouts in the same cluster.
func BenchmarkAnnouncerRollingRestart(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchRollingRestart(b, n) })
	}
}

func benchRollingRestart(b *testing.B, nodes int) {
	l := newAnnLabN(b, nodes)
	// The lab's pool covers VIP4(0)..VIP4(20); the rollout needs 50 of the
	// 55 lab VIPs.
	patch := fmt.Sprintf(`{"spec":{"addresses":[%q,%q]}}`,
		netlab.VIP4(0).String()+"-"+netlab.VIP4(rolloutVIPs-1).String(), netlab.VIP6(0).String()+"-"+netlab.VIP6(20).String())
	if _, err := l.dyn.Resource(ippoolGVR).Patch(context.Background(), "main", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, n := range l.net.Nodes {
		l.start(b, n, l.secret)
	}
	for _, n := range l.net.Nodes {
		l.waitQuorum(b, n, 30*time.Second)
	}
	// One Service per VIP, as most clusters have them: each VIP is elected
	// on its own, so the VIPs spread over the nodes.
	vips := make([]netip.Addr, rolloutVIPs)
	for i := range vips {
		vips[i] = netlab.VIP4(i)
		l.service(b, fmt.Sprintf("roll-%02d", i), false, vips[i])
	}

	b.ResetTimer()
	var worst rolloutFigures
	for i := range b.N {
		worst = worst.worse(l.rollOnce(b, i, vips))
	}
	b.StopTimer()
	b.ReportMetric(float64(worst.outage.Milliseconds()), "longest-outage-ms")
	b.ReportMetric(float64(worst.lost), "pings-lost")
	b.ReportMetric(float64(len(worst.nonOwner)), "non-owner-gratuitous")
	b.ReportMetric(float64(worst.split.Duration().Milliseconds()), "split-ms")
	b.ReportMetric(float64(worst.moves), "vip-moves")
}

// rollOnce watches one rolling restart of every announcer and returns its
// figures.
func (l *annLab) rollOnce(b *testing.B, run int, vips []netip.Addr) rolloutFigures {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mon, err := l.net.WatchBridge()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = mon.Close() }()
	prober, err := l.net.Client.ProbeVIPs(ctx, vips, probeEvery)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = prober.Stop() }()

	// Every VIP answered by one node for a second before anything moves.
	owners := map[netip.Addr]string{}
	Eventually(b, 30*time.Second, "every VIP answered by one node", func(context.Context) error {
		now := time.Now()
		if now.Sub(mon.Start()) < time.Second {
			return fmt.Errorf("recording for %s only", now.Sub(mon.Start()))
		}
		for _, vip := range vips {
			macs := mon.AnswerMACs(vip, now.Add(-time.Second), now)
			if len(macs) != 1 {
				return fmt.Errorf("%s answered by %v in the last second", vip, macs)
			}
			owners[vip] = l.nodeByMAC(macs[0])
		}
		return nil
	})
	pinged := pingTargets(vips, owners, l.net.Nodes, rolloutPinged)
	for _, vip := range pinged {
		// The client's neighbour entry exists before the rollout, as for
		// a client already talking to the Service.
		if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
			b.Fatalf("ping %s before the rollout: %v", vip, err)
		}
	}
	perNode := map[string]int{}
	for _, o := range owners {
		perNode[o]++
	}
	b.Logf("before the rollout: VIPs per node %v; pinging %v", perNode, pinged)

	// The pings' count is bounded by the budget; they stop early, with
	// the observation, once the rollout and its tail are done.
	budget := rolloutLead + time.Duration(len(l.net.Nodes))*rolloutPerNode + rolloutTail
	stopPings := make(chan struct{})
	pings := make(chan pingResult, 1)
	go func() {
		s, lo, err := pingEvery(l.net.Client, pinged, pingInterval, budget, stopPings)
		pings <- pingResult{s, lo, err}
	}()
	defer func() {
		select {
		case <-stopPings:
		default:
			close(stopPings)
		}
	}()
	time.Sleep(rolloutLead)
	rollStart := time.Now()
	var steps []string
	for _, n := range l.net.Nodes {
		p := l.procs[n.Name]
		ts := time.Now()
		if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM); err != nil {
			b.Fatalf("SIGTERM to %s: %v", n.Name, err)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			b.Fatalf("announcer on %s still running 10 s after SIGTERM", n.Name)
		}
		exited := time.Now()
		l.start(b, n, l.secret)
		l.waitQuorum(b, n, 15*time.Second)
		steps = append(steps, fmt.Sprintf("%s exit %s quorum %s", n.Name,
			exited.Sub(ts).Round(time.Millisecond), time.Since(exited).Round(time.Millisecond)))
		time.Sleep(rolloutSettle)
	}
	took := time.Since(rollStart)
	b.Logf("rollout took %s: %s", took.Round(time.Millisecond), strings.Join(steps, "; "))
	if took > time.Duration(len(l.net.Nodes))*rolloutPerNode {
		b.Fatalf("the rollout took %s, longer than its budget of %s per node", took, rolloutPerNode)
	}
	time.Sleep(rolloutTail)
	close(stopPings)
	var sent, lost int
	select {
	case r := <-pings:
		if r.err != nil {
			b.Error(r.err)
		}
		sent, lost = r.sent, r.lost
	case <-time.After(10 * time.Second):
		b.Fatal("the pings did not stop")
	}
	end := time.Now()
	if err := prober.Stop(); err != nil {
		b.Errorf("prober: %v", err)
	}
	// Dropped frames would leave holes in the timeline that look like
	// outages or hide a second answerer: the figures would be wrong.
	if err := mon.Close(); err != nil {
		b.Errorf("monitor: %v", err)
	}
	f := wireFigures(mon.Events(), vips, rollStart, end)
	f.rollout, f.sent, f.lost = took, sent, lost
	for _, vip := range vips {
		n := ownerChanges(mon.Events(), vip)
		if n > 0 && f.moves == 0 {
			b.Logf("%s changed hands %d times:\n%s", vip, n, mon.Timeline(vip))
		}
		f.moves += n
	}
	// The summary first: without -v a benchmark's log is cut at 10 lines.
	b.Logf("rollout %d of %d nodes: %s", run+1, len(l.net.Nodes), f)
	if len(f.nonOwner) > 0 {
		b.Logf("non-owner gratuitous: %s", f.nonOwnerSummary())
	}
	b.Logf("longest outage, %s:\n%s", f.outageVIP, mon.Timeline(f.outageVIP))
	if f.split.Duration() > 0 {
		b.Logf("longest split, %s: %s\n%s", f.splitVIP, f.split, mon.Timeline(f.splitVIP))
	}
	for i, c := range f.nonOwner {
		if i == 3 {
			b.Logf("... %d more non-owner gratuitous packets", len(f.nonOwner)-i)
			break
		}
		vip, _ := c.Answer()
		b.Logf("gratuitous ARP from a non-owner: %s (%s)\n%s", c.Event, l.nodeByMAC(c.MAC), mon.Timeline(vip))
	}
	return f
}

// pingTargets picks up to k VIPs to ping, each owned by a different node,
// the nodes spread over the rollout's order, so the pings see VIPs handed
// over early, midway and late.
func pingTargets(vips []netip.Addr, owners map[netip.Addr]string, nodes []*netlab.Host, k int) []netip.Addr {
	k = min(k, len(nodes))
	var out []netip.Addr
	for j := range k {
		node := nodes[j*len(nodes)/k].Name
		for _, vip := range vips {
			if owners[vip] == node {
				out = append(out, vip)
				break
			}
		}
	}
	return out
}

// pingEvery sends an echo request from h to each of vips every interval,
// for at most d or until stop is closed, and returns how many it sent and
// how many got no reply (err is only for a socket it could not open). Sends follow a fixed schedule, so a loaded machine
// delays them without stretching the run (as ping -i would), and stopping
// waits for late replies, so a stop never counts a request in flight.
func pingEvery(h *netlab.Host, vips []netip.Addr, interval, d time.Duration, stop <-chan struct{}) (sent, lost int, err error) {
	var conn *icmp.PacketConn
	if err := netlab.InNetns(h.Netns, func() (err error) {
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	// Raw ICMP sockets see every echo reply in the namespace: the id keeps
	// apart any other pinger there.
	id := (os.Getpid() + 1) & 0xffff
	rounds := int(d / interval)
	if rounds*len(vips) > 0xffff {
		return 0, 0, fmt.Errorf("%d requests would wrap the 16-bit sequence", rounds*len(vips))
	}
	var mu sync.Mutex
	to := map[int]netip.Addr{} // seq -> VIP
	replied := map[int]bool{}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, peer, err := conn.ReadFrom(buf)
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
			from, _ := netip.ParseAddr(peer.String())
			mu.Lock()
			if vip, ok := to[e.Seq]; ok && vip == from {
				replied[e.Seq] = true
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	seq := 0
send:
	for round := range rounds {
		for _, vip := range vips {
			b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("pvelb")}}).Marshal(nil)
			mu.Lock()
			to[seq] = vip
			mu.Unlock()
			// A request the kernel refused to send is one the client lost:
			// counted, not an error.
			_, _ = conn.WriteTo(b, &net.IPAddr{IP: vip.AsSlice()})
			seq++
		}
		select {
		case <-stop:
			break send
		case <-time.After(time.Until(start.Add(time.Duration(round+1) * interval))):
		}
	}
	time.Sleep(300 * time.Millisecond) // late replies
	mu.Lock()
	defer mu.Unlock()
	return seq, seq - len(replied), nil
}

// rolloutFigures are what one rollout showed on the wire and to the pings.
type rolloutFigures struct {
	rollout    time.Duration
	outage     time.Duration
	outageVIP  netip.Addr
	outageFrom time.Time
	sent, lost int
	// nonOwner are the gratuitous packets that failed the owner check.
	nonOwner []claim
	split    netlab.Split
	splitVIP netip.Addr
	// moves counts changes of the MAC answering a VIP, over all VIPs:
	// each resets the connections kube-proxy holds for it on the old node.
	moves int
}

// worse keeps the worst of each figure of f and g.
func (f rolloutFigures) worse(g rolloutFigures) rolloutFigures {
	if g.outage > f.outage {
		f.outage, f.outageVIP, f.outageFrom = g.outage, g.outageVIP, g.outageFrom
	}
	f.lost, f.sent = max(f.lost, g.lost), max(f.sent, g.sent)
	if len(g.nonOwner) > len(f.nonOwner) {
		f.nonOwner = g.nonOwner
	}
	if g.split.Duration() > f.split.Duration() {
		f.split, f.splitVIP = g.split, g.splitVIP
	}
	f.rollout = max(f.rollout, g.rollout)
	f.moves = max(f.moves, g.moves)
	return f
}

// claim is a gratuitous packet that failed the owner check.
type claim struct {
	netlab.Event
	// kind says how it failed, for telling apart what a fix would need.
	kind claimKind
}

type claimKind int

const (
	// gratuitousReply: an ARP reply with the VIP as sender and target (a
	// node answering another's announcement as if it were a request).
	gratuitousReply claimKind = iota
	// othersAnswer: another node answered the probes around it, the sender
	// neither just before nor after (a restarted non-owner's claim).
	othersAnswer
	// unanswered: nobody answered a probe in the check window.
	unanswered
)

// nonOwnerSummary counts the failed owner checks by kind.
func (f rolloutFigures) nonOwnerSummary() string {
	var n [3]int
	for _, c := range f.nonOwner {
		n[c.kind]++
	}
	return fmt.Sprintf("%d gratuitous ARP replies, %d announcements while another node answered and the sender did not, "+
		"%d announcements nobody backed with an answer",
		n[gratuitousReply], n[othersAnswer], n[unanswered])
}

func (f rolloutFigures) String() string {
	return fmt.Sprintf("took %s; longest outage %s (%s from %s); %d of %d pings lost; %d non-owner gratuitous; longest split %s; %d VIP moves",
		f.rollout.Round(time.Millisecond), f.outage.Round(time.Millisecond), f.outageVIP, f.outageFrom.Format("15:04:05.000"),
		f.lost, f.sent, len(f.nonOwner), f.split.Duration(), f.moves)
}

// wireFigures computes the outage, non-owner and split figures of a
// recording for vips, for the rollout that ran from start to end (see
// BenchmarkAnnouncerRollingRestart for the definitions).
func wireFigures(ev netlab.Events, vips []netip.Addr, start, end time.Time) rolloutFigures {
	var f rolloutFigures
	for _, vip := range vips {
		var ans []netlab.Event
		for _, e := range ev {
			if a, ok := e.Answer(); ok && a == vip {
				ans = append(ans, e)
			}
		}
		slices.SortStableFunc(ans, func(a, b netlab.Event) int { return a.Time.Compare(b.Time) })

		// Outage: gaps between consecutive replies that reach into
		// [start, end]. The gap open at start counts from the last reply
		// before it (from start when there was none) and the one open at
		// end up to end, so a VIP left unanswered counts too.
		var times []time.Time
		for _, e := range ans {
			if !e.Gratuitous() && e.Time.Before(end) {
				times = append(times, e.Time)
			}
		}
		if len(times) == 0 || times[0].After(start) {
			times = slices.Insert(times, 0, start)
		}
		times = append(times, end)
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); times[i].After(start) && gap > f.outage {
				f.outage, f.outageVIP, f.outageFrom = gap, vip, times[i-1]
			}
		}

		// Owner check of each gratuitous packet: its sender is the owner
		// when it answered the probes just before it (within
		// ownerBefore, nobody else in between: the owner's own takeover
		// packets, even one sent just before a failback) or answers them
		// after it (within ownerCheck: a claim followed by service). Two
		// nodes answering around a handover are the split's business,
		// not this figure's. A packet too close to the end to be checked
		// is not counted.
		for i, g := range ans {
			if !g.Gratuitous() || g.Time.Add(ownerCheck).After(end) {
				continue
			}
			var lastBefore, firstSelf, firstOther *netlab.Event
			for j := i - 1; j >= 0; j-- {
				e := ans[j]
				if g.Time.Sub(e.Time) > ownerBefore {
					break
				}
				if !e.Gratuitous() {
					lastBefore = &ans[j]
					break
				}
			}
			for j := i + 1; j < len(ans); j++ {
				e := ans[j]
				if e.Time.Sub(g.Time) > ownerCheck {
					break
				}
				if e.Gratuitous() || !e.Time.After(g.Time) {
					continue
				}
				if sameMAC(e.MAC, g.MAC) {
					if firstSelf == nil {
						firstSelf = &ans[j]
					}
				} else if firstOther == nil {
					firstOther = &ans[j]
				}
			}
			c := claim{Event: g}
			switch {
			case g.Kind == netlab.ARPReply:
				c.kind = gratuitousReply
			case firstSelf != nil || (lastBefore != nil && sameMAC(lastBefore.MAC, g.MAC)):
				continue // the owner
			case firstOther == nil && lastBefore == nil:
				c.kind = unanswered
			default:
				c.kind = othersAnswer
			}
			f.nonOwner = append(f.nonOwner, c)
		}

		for _, s := range netlab.Events(ans).SplitAnswers(vip, splitWindow) {
			if s.Duration() > f.split.Duration() {
				f.split, f.splitVIP = s, vip
			}
		}
	}
	slices.SortFunc(f.nonOwner, func(a, b claim) int { return a.Time.Compare(b.Time) })
	return f
}

func sameMAC(a, b net.HardwareAddr) bool { return a.String() == b.String() }

// TestWireFigures checks the rollout figures on made-up timelines (no lab
// needed): the benchmark's claims rest on these definitions.
func TestWireFigures(t *testing.T) {
	vip, client := netlab.VIP4(0), netip.MustParseAddr("192.0.2.100")
	a, bm := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	reply := func(mac net.HardwareAddr, ms int) netlab.Event {
		return netlab.Event{Time: at(ms), Kind: netlab.ARPReply, MAC: mac, SenderIP: vip, TargetIP: client}
	}
	replyToClaim := func(mac net.HardwareAddr, ms int) netlab.Event {
		return netlab.Event{Time: at(ms), Kind: netlab.ARPReply, MAC: mac, SenderIP: vip, TargetIP: vip}
	}
	claim := func(mac net.HardwareAddr, ms int) netlab.Event {
		return netlab.Event{Time: at(ms), Kind: netlab.ARPRequest, MAC: mac, SenderIP: vip, TargetIP: vip}
	}
	// replies from mac every 20 ms in [from, to).
	every := func(mac net.HardwareAddr, from, to int) netlab.Events {
		var ev netlab.Events
		for ms := from; ms < to; ms += 20 {
			ev = append(ev, reply(mac, ms))
		}
		return ev
	}
	cat := func(parts ...netlab.Events) netlab.Events { return slices.Concat(parts...) }
	one := func(e netlab.Event) netlab.Events { return netlab.Events{e} }
	for _, tc := range []struct {
		name             string
		ev               netlab.Events
		outage, split    time.Duration
		nonOwner         []claimKind
		outageFromOffset int
	}{
		{"clean handover", cat(every(a, 0, 500), one(claim(bm, 495)), every(bm, 500, 2000)), 20 * time.Millisecond, 0, nil, 480},
		{"old owner answers after the claim", cat(every(a, 0, 520), one(claim(bm, 495)), every(bm, 510, 2000)), 20 * time.Millisecond, 30 * time.Millisecond, nil, 480},
		{"a non-owner claims while the owner answers", cat(every(a, 0, 2000), one(claim(bm, 995))), 20 * time.Millisecond, 20 * time.Millisecond, []claimKind{othersAnswer}, 480},
		{"old owner replies to the claim", cat(every(a, 0, 500), one(claim(bm, 495)), one(replyToClaim(a, 496)), every(bm, 500, 2000)), 20 * time.Millisecond, 20 * time.Millisecond, []claimKind{gratuitousReply}, 480},
		{"failback gap", cat(every(a, 0, 500), one(claim(bm, 800)), every(bm, 800, 2000)), 320 * time.Millisecond, 0, nil, 480},
		{"announced just before a failback", cat(every(a, 0, 500), one(claim(a, 485)), every(bm, 700, 2000)), 220 * time.Millisecond, 0, nil, 480},
		{"claim nobody backs", cat(every(a, 0, 500), one(claim(bm, 600)), every(a, 1000, 2000)), 520 * time.Millisecond, 0, []claimKind{unanswered}, 480},
		{"claim too late to check", cat(every(a, 0, 1900), one(claim(a, 1950))), 120 * time.Millisecond, 0, nil, 1880},
		{"never answered", nil, 1510 * time.Millisecond, 0, nil, 490},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := wireFigures(tc.ev, []netip.Addr{vip}, at(490), at(2000))
			if f.outage != tc.outage || !f.outageFrom.Equal(at(tc.outageFromOffset)) {
				t.Errorf("outage %s from %s, want %s from +%dms", f.outage, f.outageFrom.Sub(t0), tc.outage, tc.outageFromOffset)
			}
			var kinds []claimKind
			for _, c := range f.nonOwner {
				kinds = append(kinds, c.kind)
			}
			if !slices.Equal(kinds, tc.nonOwner) {
				t.Errorf("non-owner gratuitous of kinds %v, want %v", kinds, tc.nonOwner)
			}
			if f.split.Duration() != tc.split {
				t.Errorf("split %s, want %s", f.split, tc.split)
			}
		})
	}
}
