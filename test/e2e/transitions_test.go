package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/announcer/election"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/test/netlab"
)

// The transitions an announcer cluster goes through, checked on the wire:
// a monitor on the bridge records every ARP and NDP answer while the client
// probes each VIP every probeEvery, and a ping runs through the VIP, for the
// whole of each transition. The rule (docs/architecture.md, "One
// answerer"): at most one node answers a VIP at any instant, apart from an
// overlap of at most maxOverlap where a handover legitimately has both
// speak for a moment (a leaving node answers until it sees its successor's
// claim).
const (
	probeEvery = 20 * time.Millisecond
	// splitWindow: two MACs answering within this of each other count as
	// answering at the same time (three probe rounds).
	splitWindow = 3 * probeEvery
	// maxOverlap bounds one split: one heartbeat interval.
	maxOverlap = 100 * time.Millisecond
	// reloadEvery is the announcers' secret re-read period in these tests.
	reloadEvery = 200 * time.Millisecond
)

// watched is one transition under observation.
type watched struct {
	l      *annLab
	mon    *netlab.Monitor
	prober *netlab.Prober
	vips   []netip.Addr
	ping   chan pingResult
	cancel context.CancelFunc
}

type pingResult struct {
	sent, lost int
	err        error
}

// watch starts the monitor, the prober and a ping of the first VIP lasting
// pingFor (0: no ping).
func (l *annLab) watch(t *testing.T, pingFor time.Duration, vips ...netip.Addr) *watched {
	t.Helper()
	mon, err := l.net.WatchBridge()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	prober, err := l.net.Client.ProbeVIPs(ctx, vips, probeEvery)
	if err != nil {
		cancel()
		_ = mon.Close()
		t.Fatal(err)
	}
	w := &watched{l: l, mon: mon, prober: prober, vips: vips, cancel: cancel}
	if pingFor > 0 {
		w.ping = make(chan pingResult, 1)
		go func() {
			s, lo, err := l.pingLoss(ctx, vips[0], pingFor)
			w.ping <- pingResult{s, lo, err}
		}()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *watched) stop() {
	w.cancel()
	_ = w.prober.Stop()
	_ = w.mon.Close()
}

// finish stops the observation and checks the one-answerer rule for every
// VIP; it returns the ping result (zero without a ping).
func (w *watched) finish(t *testing.T) pingResult {
	t.Helper()
	var pr pingResult
	if w.ping != nil {
		pr = <-w.ping
		if pr.err != nil {
			t.Errorf("ping: %v", pr.err)
		}
	}
	if err := w.prober.Stop(); err != nil {
		t.Errorf("prober: %v", err)
	}
	if err := w.mon.Close(); err != nil {
		t.Errorf("monitor: %v", err)
	}
	for _, vip := range w.vips {
		for _, s := range w.mon.SplitAnswers(vip, splitWindow) {
			if s.Duration() > maxOverlap {
				t.Errorf("%s answered by two nodes for %s (> %s): %s\n%s", vip, s.Duration(), maxOverlap, s, w.mon.Timeline(vip))
			}
		}
	}
	return pr
}

// answeredBy returns the lab nodes whose MACs answered vip in [from, to).
func (w *watched) answeredBy(vip netip.Addr, from, to time.Time) []string {
	var out []string
	for _, m := range w.mon.AnswerMACs(vip, from, to) {
		out = append(out, w.l.nodeByMAC(m))
	}
	return out
}

func (l *annLab) nodeByMAC(m net.HardwareAddr) string {
	for _, n := range l.net.Nodes {
		if n.MAC.String() == m.String() {
			return n.Name
		}
	}
	return m.String()
}

// signal sends sig to the process group of the node's announcer.
func (l *annLab) signal(t *testing.T, node string, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-l.procs[node].cmd.Process.Pid, sig); err != nil {
		t.Fatalf("%s to %s: %v", sig, node, err)
	}
}

// waitQuorum waits up to timeout until the node's announcer reports that it
// may answer.
func (l *annLab) waitQuorum(t testing.TB, node *netlab.Host, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, node.Name+" has quorum", func(context.Context) error {
		v, err := l.scrape(node, "pvelb_announcer_membership_quorum")
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("quorum %v", v)
		}
		return nil
	})
}

func TestAnnouncerTransitions(t *testing.T) {
	l := newAnnLab(t)
	dir := t.TempDir()
	secretOf := map[string]string{}
	for _, n := range l.net.Nodes {
		f := filepath.Join(dir, n.Name+".secret")
		if err := os.WriteFile(f, []byte(annSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		secretOf[n.Name] = f
	}
	start := func(n *netlab.Host) {
		l.start(t, n, secretOf[n.Name], "--membership-secret-reload-interval="+reloadEvery.String())
	}
	for _, n := range l.net.Nodes {
		start(n)
	}
	vip, vip6 := netlab.VIP4(3), netlab.VIP6(3)
	l.service(t, "trans", false, vip, vip6)
	owner := l.answering(t, vip, 30*time.Second)
	owner6 := l.answering(t, vip6, 10*time.Second)
	for _, n := range l.net.Nodes {
		l.waitQuorum(t, n, 15*time.Second)
	}
	ctx := context.Background()
	// A node that owns neither VIP, if there is one.
	var bystander *netlab.Host
	for _, n := range l.net.Nodes {
		if n != owner && n != owner6 {
			bystander = n
		}
	}
	t.Logf("%s answered by %s, %s by %s", vip, owner.Name, vip6, owner6.Name)

	t.Run("restart of a non-owner claims nothing", func(t *testing.T) {
		n := bystander
		if n == nil {
			for _, c := range l.net.Nodes {
				if c != owner {
					n = c
				}
			}
		}
		if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		w := l.watch(t, 4*time.Second, vip, vip6)
		t0 := time.Now()
		l.signal(t, n.Name, syscall.SIGKILL)
		<-l.procs[n.Name].done
		start(n)
		l.waitQuorum(t, n, 15*time.Second)
		time.Sleep(time.Until(t0.Add(4 * time.Second)))
		pr := w.finish(t)
		if g := w.mon.Gratuitous(vip)[n.MAC.String()]; len(g) > 0 {
			t.Errorf("restarted non-owner %s sent %d gratuitous ARP for %s\n%s", n.Name, len(g), vip, w.mon.Timeline(vip))
		}
		if got := w.answeredBy(vip, time.Time{}, time.Time{}); len(got) != 1 || got[0] != owner.Name {
			t.Errorf("%s answered by %v during the restart, want only %s\n%s", vip, got, owner.Name, w.mon.Timeline(vip))
		}
		if n != owner6 {
			if g := w.mon.Gratuitous(vip6)[n.MAC.String()]; len(g) > 0 {
				t.Errorf("restarted non-owner %s sent %d unsolicited NA for %s", n.Name, len(g), vip6)
			}
		}
		nb, err := l.net.Client.Neigh(ctx, vip)
		if err != nil || nb.MAC.String() != owner.MAC.String() {
			t.Errorf("client's neighbour entry for %s is %+v (%v), want the owner %s", vip, nb, err, owner.Name)
		}
		if pr.lost > 0 {
			t.Errorf("%d of %d pings lost while a non-owner restarted", pr.lost, pr.sent)
		}
	})

	oneWay := func(name string, victim func() *netlab.Host, dir netlab.Direction, wantOwnerKept bool) {
		t.Run(name, func(t *testing.T) {
			n := victim()
			before := l.answering(t, vip, 5*time.Second)
			w := l.watch(t, 0, vip, vip6)
			if err := n.DropUDP(7947, dir); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			time.Sleep(3 * time.Second)
			// Steady partition: from one second in, one node answers.
			during := w.answeredBy(vip, t0.Add(time.Second), time.Now())
			if dir == netlab.In {
				checkStatusOneWayIn(t, l, n)
			}
			if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
				t.Errorf("ping %s during the partition: %v", vip, err)
			}
			if err := n.Heal(); err != nil {
				t.Fatal(err)
			}
			healed := time.Now()
			time.Sleep(2 * time.Second)
			after := w.answeredBy(vip, healed.Add(time.Second), time.Now())
			w.finish(t)
			if len(during) != 1 {
				t.Errorf("during the partition (%s of %s) %s was answered by %v, want one node\n%s", dir, n.Name, vip, during, w.mon.Timeline(vip))
			} else if wantOwnerKept && during[0] != before.Name {
				t.Errorf("during the partition of %s the owner moved from %s to %s", n.Name, before.Name, during[0])
			} else if !wantOwnerKept && during[0] == n.Name {
				t.Errorf("the partitioned node %s kept answering %s", n.Name, vip)
			}
			if len(after) != 1 {
				t.Errorf("after healing %s was answered by %v\n%s", vip, after, w.mon.Timeline(vip))
			}
			if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
				t.Errorf("ping %s after healing: %v", vip, err)
			}
		})
	}
	nonOwner := func() *netlab.Host {
		cur := l.answering(t, vip, 5*time.Second)
		for _, n := range l.net.Nodes {
			if n != cur {
				return n
			}
		}
		return nil
	}
	currentOwner := func() *netlab.Host { return l.answering(t, vip, 5*time.Second) }
	// The reproduction from the issue: inbound membership traffic dropped
	// on a node that does not own the VIP (a VM firewall with policy_in
	// DROP and no rule for the port).
	oneWay("one-way partition of a non-owner (inbound) leaves the owner alone", nonOwner, netlab.In, true)
	oneWay("one-way partition of a non-owner (outbound) leaves the owner alone", nonOwner, netlab.Out, true)
	oneWay("one-way partition of the owner (inbound) moves the VIP once", currentOwner, netlab.In, false)
	oneWay("one-way partition of the owner (outbound) moves the VIP once", currentOwner, netlab.Out, false)
	oneWay("two-way partition of the owner moves the VIP once", currentOwner, netlab.Both, false)

	t.Run("SIGSTOP of the owner for 1s", func(t *testing.T) {
		cur := l.answering(t, vip, 5*time.Second)
		w := l.watch(t, 4*time.Second, vip, vip6)
		t0 := time.Now()
		l.signal(t, cur.Name, syscall.SIGSTOP)
		time.Sleep(time.Second)
		l.signal(t, cur.Name, syscall.SIGCONT)
		time.Sleep(time.Until(t0.Add(4 * time.Second)))
		pr := w.finish(t)
		t.Logf("SIGSTOP of %s: answered by %v; %d of %d pings lost", cur.Name, w.answeredBy(vip, time.Time{}, time.Time{}), pr.lost, pr.sent)
		if got := w.answeredBy(vip, t0.Add(3*time.Second), time.Time{}); len(got) != 1 {
			t.Errorf("after the stall %s answered by %v\n%s", vip, got, w.mon.Timeline(vip))
		}
		if pr.lost > 0 {
			t.Errorf("%d of %d pings lost", pr.lost, pr.sent)
		}
	})

	t.Run("rolling restart of every announcer", func(t *testing.T) {
		const budget = 20 * time.Second
		w := l.watch(t, budget, vip, vip6)
		stalls := watchStalls(l.procs)
		t0 := time.Now()
		for _, n := range l.net.Nodes {
			l.signal(t, n.Name, syscall.SIGTERM)
			select {
			case <-l.procs[n.Name].done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s did not stop on SIGTERM", n.Name)
			}
			start(n)
			stalls.add(l.procs)
			l.waitQuorum(t, n, 15*time.Second)
			time.Sleep(500 * time.Millisecond)
		}
		if time.Since(t0) > budget-2*time.Second {
			t.Fatalf("the rollout took %s, longer than the observation", time.Since(t0))
		}
		time.Sleep(time.Until(t0.Add(budget)))
		pr := w.finish(t)
		t.Logf("rolling restart: %d of %d pings lost; %s answered by %v", pr.lost, pr.sent, vip, w.answeredBy(vip, time.Time{}, time.Time{}))
		if pr.lost > 10 {
			t.Errorf("%d of %d pings (10 ms apart) lost during the rollout, want <= 10", pr.lost, pr.sent)
		}
		if got := l.answering(t, vip6, 5*time.Second); got == nil {
			t.Error("nobody answers NDP after the rollout")
		}
		// Each announcer restarts in place: its VIPs stay with its node
		// (whose kube-proxy holds their connections), so one MAC answers
		// each VIP from start to end, never a second.
		if n := stalls.count(); n > 0 {
			t.Logf("%d stall reports from the announcers during the rollout (the host froze them); a stalled owner steps down, so the VIP may move: not checked", n)
			return
		}
		for _, ip := range []netip.Addr{vip, vip6} {
			if got := w.answeredBy(ip, time.Time{}, time.Time{}); len(got) != 1 {
				t.Errorf("during the rollout %s was answered by %v, want one node throughout\n%s", ip, got, w.mon.Timeline(ip))
			}
		}
	})

	t.Run("SIGTERM of a cordoned owner hands over once", func(t *testing.T) {
		cur := l.answering(t, vip, 5*time.Second)
		w := l.watch(t, 4*time.Second, vip)
		l.cordon(t, cur.Name, true)
		t0 := time.Now()
		l.signal(t, cur.Name, syscall.SIGTERM)
		select {
		case <-l.procs[cur.Name].done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not stop on SIGTERM", cur.Name)
		}
		next := l.answering(t, vip, 2*time.Second)
		if next == nil || next.Name == cur.Name {
			t.Fatalf("after SIGTERM of cordoned %s, %s is answered by %v", cur.Name, vip, next)
		}
		l.cordon(t, cur.Name, false)
		start(cur)
		l.waitQuorum(t, cur, 15*time.Second)
		time.Sleep(time.Until(t0.Add(4 * time.Second)))
		pr := w.finish(t)
		t.Logf("SIGTERM of cordoned %s: %s answered by %v; %d of %d pings lost", cur.Name, vip, w.answeredBy(vip, time.Time{}, time.Time{}), pr.lost, pr.sent)
		if pr.lost > 10 {
			t.Errorf("%d of %d pings lost during the handover, want <= 10", pr.lost, pr.sent)
		}
	})

	t.Run("the owner re-asserts against a foreign responder", func(t *testing.T) {
		cur := l.answering(t, vip, 5*time.Second)
		if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // served for longer than l2state.ReassertAfter
		rogue := l.net.Host("rogue")
		if rogue == nil {
			rogue = l.net.AddHost(t, "rogue", 99)
		}
		// Not exposed before the first claim: zero.
		before, _ := l.scrape(cur, `pvelb_announcer_arp_foreign_claims_total{interface="eth0"}`)
		w := l.watch(t, 0, vip)
		sendGratuitous(t, rogue, vip)
		Eventually(t, 3*time.Second, "the client's entry is back on the owner", func(ctx context.Context) error {
			nb, err := l.net.Client.Neigh(ctx, vip)
			if err != nil {
				return err
			}
			if nb.MAC.String() != cur.MAC.String() {
				return fmt.Errorf("entry %+v", nb)
			}
			return nil
		})
		w.finish(t)
		if g := w.mon.Gratuitous(vip)[cur.MAC.String()]; len(g) != 1 {
			t.Errorf("owner %s sent %d gratuitous ARP after the foreign claim, want exactly 1\n%s", cur.Name, len(g), w.mon.Timeline(vip))
		}
		if after := l.metric(t, cur, `pvelb_announcer_arp_foreign_claims_total{interface="eth0"}`); after <= before {
			t.Errorf("foreign claims counted %v -> %v", before, after)
		}
	})

	t.Run("secret rotation keeps every node in the membership", func(t *testing.T) {
		w := l.watch(t, 0, vip, vip6)
		newSecret := "rotated-membership-secret-9876543210"
		steps := []string{annSecret + "\n" + newSecret + "\n", newSecret + "\n" + annSecret + "\n", newSecret + "\n"}
		for _, content := range steps {
			// One node after the other, as kubelets refresh mounted
			// Secrets: neighbouring steps must keep talking.
			for _, n := range l.net.Nodes {
				if err := os.WriteFile(secretOf[n.Name]+".tmp", []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(secretOf[n.Name]+".tmp", secretOf[n.Name]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * reloadEvery)
				for _, o := range l.net.Nodes {
					if v, err := l.scrape(o, "pvelb_announcer_membership_peers_alive"); err != nil || v != 2 {
						t.Fatalf("after writing step %q on %s: %s hears %v peers (%v)", strings.SplitN(content, "\n", 2)[0][:8], n.Name, o.Name, v, err)
					}
				}
			}
		}
		w.finish(t)
		if got := w.answeredBy(vip, time.Time{}, time.Time{}); len(got) != 1 {
			t.Errorf("%s answered by %v during the rotation, want one node throughout", vip, got)
		}
		// And a node left on the old secret is refused.
		if err := os.WriteFile(secretOf[l.net.Nodes[0].Name], []byte(annSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 5*time.Second, "the node on the retired secret is cut off", func(context.Context) error {
			v, err := l.scrape(l.net.Nodes[0], "pvelb_announcer_membership_quorum")
			if err != nil || v != 0 {
				return fmt.Errorf("quorum %v (%v)", v, err)
			}
			return nil
		})
	})
}

// addNodeObject creates the Node of a lab host as the kubelet and pvelb-ccm
// would leave it: InternalIPs, a zone, and the admission of a VM without an
// IP filter (no pvelb-ccm runs in these labs).
func (l *annLab) addNodeObject(t testing.TB, h *netlab.Host, zone string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.Name,
		// The labels pvelb-ccm sets when it initialises the Node.
		Labels: map[string]string{corev1.LabelTopologyZone: zone, names.LabelProxmoxHost: zone,
			names.LabelProxmoxVMID: strconv.Itoa(100 + int(h.IPv4.Addr().As4()[3]))},
		Annotations: map[string]string{names.AnnotationAdmitted: eligibility.Unfiltered}}}
	created, err := l.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: h.IPv4.Addr().String()},
		{Type: corev1.NodeInternalIP, Address: h.IPv6.Addr().String()},
	}
	if _, err := l.kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// everyVIPAnsweredOnce asserts that each VIP is answered by exactly one node
// in the monitor's last second and returns the owners.
func (w *watched) everyVIPAnsweredOnce(t *testing.T) map[netip.Addr]string {
	t.Helper()
	owners := map[netip.Addr]string{}
	now := time.Now()
	for _, vip := range w.vips {
		got := w.answeredBy(vip, now.Add(-time.Second), now)
		if len(got) != 1 {
			t.Errorf("%s answered by %v in the last second, want one node\n%s", vip, got, w.mon.Timeline(vip))
			continue
		}
		owners[vip] = got[0]
	}
	return owners
}

// TestAnnouncerNodesJoinAndLeave: a node joining takes over its share of
// VIPs with one handoff each; a node the cluster autoscaler is draining, and
// then a deleted one, give theirs up, never with two answerers.
func TestAnnouncerNodesJoinAndLeave(t *testing.T) {
	l := newAnnLab(t)
	for _, n := range l.net.Nodes {
		l.start(t, n, l.secret)
	}
	var vips []netip.Addr
	for i := 5; i < 21; i++ {
		vips = append(vips, netlab.VIP4(i))
	}
	l.service(t, "spread", false, vips...)
	for _, vip := range vips {
		l.answering(t, vip, 30*time.Second)
	}
	ctx := context.Background()

	t.Run("a node joins", func(t *testing.T) {
		w := l.watch(t, 0, vips...)
		h := l.net.AddNode(t, true)
		for _, vip := range vips {
			if err := h.AddVIP(vip); err != nil {
				t.Fatal(err)
			}
		}
		l.addNodeObject(t, h, "pve4")
		l.start(t, h, l.secret)
		l.waitQuorum(t, h, 15*time.Second)
		time.Sleep(2 * time.Second)
		owners := w.everyVIPAnsweredOnce(t)
		w.finish(t)
		// The owners must be exactly what the election gives with the
		// new node in (rendezvous hashing: it takes only its own share).
		var cands []election.Candidate
		for i, n := range l.net.Nodes {
			cands = append(cands, election.Candidate{Name: n.Name, Zone: fmt.Sprintf("pve%d", i+1)})
		}
		won := 0
		for _, vip := range vips {
			want, _ := election.Elect(vip, cands, func(string) bool { return true })
			if owners[vip] != want {
				t.Errorf("%s answered by %s after %s joined, the election gives %s", vip, owners[vip], h.Name, want)
			}
			if want == h.Name {
				won++
			}
		}
		t.Logf("%s took %d of %d VIPs", h.Name, won, len(vips))
		if won == 0 {
			t.Fatalf("the election gives %s none of the %d VIPs: pick others so that the join moves some", h.Name, len(vips))
		}
		for _, vip := range vips {
			if g := w.mon.Gratuitous(vip); len(g) > 1 {
				t.Errorf("%s: gratuitous packets from %d MACs when %s joined, want at most the new owner's", vip, len(g), h.Name)
			}
		}
	})

	t.Run("a node drained by the cluster autoscaler, then deleted", func(t *testing.T) {
		victim := l.answering(t, vips[0], 5*time.Second)
		w := l.watch(t, 0, vips...)
		node, err := l.kube.CoreV1().Nodes().Get(ctx, victim.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: "ToBeDeletedByClusterAutoscaler", Effect: corev1.TaintEffectNoSchedule})
		if _, err := l.kube.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		owners := w.everyVIPAnsweredOnce(t)
		for vip, o := range owners {
			if o == victim.Name {
				t.Errorf("%s still answered by the draining node %s", vip, o)
			}
		}
		if err := l.kube.CoreV1().Nodes().Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		for vip, o := range w.everyVIPAnsweredOnce(t) {
			if o == victim.Name {
				t.Errorf("%s answered by the deleted node %s", vip, o)
			}
		}
		w.finish(t)
		if err := l.net.Client.Ping(ctx, vips[0], 2*time.Second); err != nil {
			t.Errorf("ping %s after the drain: %v", vips[0], err)
		}
	})
}

// TestAnnouncerPoolInterface: a pool names an interface only some nodes
// have. The node that lacks it is never elected (it would win a VIP it
// cannot answer: nobody would answer), and an owner whose interface goes
// down hands the VIP over.
func TestAnnouncerPoolInterface(t *testing.T) {
	l := newAnnLab(t)
	side := map[string]string{} // node -> MAC of its eth1
	for _, n := range l.net.Nodes[1:] {
		side[n.Name] = n.AddLink(t, "eth1").String()
	}
	for _, n := range l.net.Nodes {
		l.start(t, n, l.secret)
	}
	first, last := netlab.VIP4(30), netlab.VIP4(39)
	l.pool(t, "side", map[string]any{
		"addresses": []any{first.String() + "-" + last.String()},
		"announce":  map[string]any{"mode": "arp", "interfaces": []any{"eth1"}},
	})
	// A VIP the election would give node1, which has no eth1.
	var cands []election.Candidate
	for i, n := range l.net.Nodes {
		cands = append(cands, election.Candidate{Name: n.Name, Zone: fmt.Sprintf("pve%d", i+1)})
	}
	var vip netip.Addr
	for ip := first; ip.Compare(last) <= 0; ip = ip.Next() {
		if w, _ := election.Elect(ip, cands, func(string) bool { return true }); w == l.net.Nodes[0].Name {
			vip = ip
			break
		}
	}
	if !vip.IsValid() {
		t.Fatal("no VIP in the side pool that node1 would win")
	}
	for _, n := range l.net.Nodes {
		l.waitQuorum(t, n, 15*time.Second)
	}
	w := l.watch(t, 0, vip)
	l.serviceInPool(t, "side", "side", false, vip)
	ctx := context.Background()
	var owner string
	Eventually(t, 10*time.Second, "one eth1 answers "+vip.String(), func(ctx context.Context) error {
		macs, err := l.net.Client.Arping(ctx, vip, 2, 100*time.Millisecond)
		if err != nil {
			return err
		}
		if len(macs) != 1 {
			return fmt.Errorf("answers %v", macs)
		}
		for n, m := range side {
			if m == macs[0].String() {
				owner = n
				return nil
			}
		}
		return fmt.Errorf("answer from %s, not an eth1", macs[0])
	})
	t.Logf("%s (node1's by the election) answered by %s's eth1", vip, owner)
	if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
		t.Errorf("ping %s: %v", vip, err)
	}

	if err := l.net.Host(owner).SetLink("eth1", false); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 5*time.Second, "the other eth1 answers", func(ctx context.Context) error {
		macs, err := l.net.Client.Arping(ctx, vip, 1, 100*time.Millisecond)
		if err != nil {
			return err
		}
		if len(macs) != 1 || macs[0].String() == side[owner] {
			return fmt.Errorf("answers %v", macs)
		}
		return nil
	})
	time.Sleep(time.Second)
	w.finish(t)
	if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
		t.Errorf("ping %s after %s's eth1 went down: %v", vip, owner, err)
	}
}

// sendGratuitous makes host claim ip with a gratuitous ARP, as another
// responder for the address (a second load balancer) would.
func sendGratuitous(t *testing.T, host *netlab.Host, ip netip.Addr) {
	t.Helper()
	err := netlab.InNetns(host.Netns, func() error {
		ifi, err := net.InterfaceByName(host.Link)
		if err != nil {
			return err
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return err
		}
		defer c.Close()
		p, err := arp.NewPacket(arp.OperationRequest, host.MAC, ip, ethernet.Broadcast, ip)
		if err != nil {
			return err
		}
		return c.WriteTo(p, ethernet.Broadcast)
	})
	if err != nil {
		t.Fatalf("gratuitous ARP from %s: %v", host.Name, err)
	}
}

// stallWatch counts the announcers' reports of their own stalls ("was
// stalled" in their logs) from its start on, across restarts. A host that
// freezes every process for longer than dead-after minus an interval (a
// loaded CI machine) makes a stalled owner step down and its VIP move: a
// transition of its own, which a test of another one must tell apart.
type stallWatch struct{ base map[*Process]int }

const stallReport = "was stalled"

func watchStalls(procs map[string]*Process) *stallWatch {
	w := &stallWatch{base: map[*Process]int{}}
	for _, p := range procs {
		w.base[p] = strings.Count(p.Output(), stallReport)
	}
	return w
}

// add takes in processes started since (their reports all count).
func (w *stallWatch) add(procs map[string]*Process) {
	for _, p := range procs {
		if _, ok := w.base[p]; !ok {
			w.base[p] = 0
		}
	}
}

// count is the number of stall reports since the start.
func (w *stallWatch) count() int {
	n := 0
	for p, base := range w.base {
		n += strings.Count(p.Output(), stallReport) - base
	}
	return n
}

// checkStatusOneWayIn: with its inbound membership traffic dropped, victim's
// /status shows it hears nobody and may not answer, and every other node's
// shows that it hears victim but victim does not hear it: the pair an
// operator has to look at, named from either end.
func checkStatusOneWayIn(t *testing.T, l *annLab, victim *netlab.Host) {
	t.Helper()
	st, err := l.status(victim)
	if err != nil {
		t.Error(err)
		return
	}
	if st.Membership.MayAnswer || st.Membership.Quorum || len(st.Answering) > 0 {
		t.Errorf("%s cut off inbound reports quorum %v, may answer %v, answering %v", victim.Name, st.Membership.Quorum, st.Membership.MayAnswer, st.Answering)
	}
	for _, p := range st.Membership.Peers {
		if p.Heard {
			t.Errorf("%s cut off inbound says it hears %s", victim.Name, p.Name)
		}
	}
	for _, n := range l.net.Nodes {
		if n == victim {
			continue
		}
		st, err := l.status(n)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, p := range st.Membership.Peers {
			if p.Name == victim.Name && (!p.Heard || p.HearsUs) {
				t.Errorf("%s's view of %s: heard %v, hears us %v; want heard, not hearing us", n.Name, victim.Name, p.Heard, p.HearsUs)
			}
		}
	}
}
