package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
)

// BenchmarkPeers runs pvelb, MetalLB and kube-vip in turn in the same
// traffic lab (three node namespaces on one bridge, the real apiserver,
// kube-controller-manager and kube-proxy, backend pods, the Proxmox
// firewall emulated from the simulator's state) and measures each on the
// same scenarios; `make bench-peers` runs it and writes the table to
// docs/benchmarks-peers.md (PVELB_PEERS_RESULTS). PVELB_PEERS_RUNS sets the
// runs per timed scenario (10 when unset), PVELB_PEERS_ONLY a comma list of
// implementations (pvelb,metallb,kube-vip). Not part of `make test`.
func BenchmarkPeers(b *testing.B) {
	if os.Getenv("PVELB_PEERS_BIN_DIR") == "" {
		b.Skip("the peers' binaries: run `make bench-peers` (PVELB_PEERS_BIN_DIR), not `make bench`")
	}
	runs := 10
	if s := os.Getenv("PVELB_PEERS_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("PVELB_PEERS_RUNS=%q: want a positive count", s)
		}
		runs = n
	}
	only := os.Getenv("PVELB_PEERS_ONLY")
	res := &peerResults{runs: runs}
	for _, impl := range []lbImpl{pvelbImpl{}, &metallbImpl{}, kubeVIPImpl{}} {
		if only != "" && !slices.Contains(strings.Split(only, ","), strings.ToLower(impl.name())) {
			continue
		}
		b.Run(impl.name(), func(b *testing.B) {
			r := res.add(impl)
			for _, v := range []pvefw.Variant{pvefw.Classic, pvefw.Nftables} {
				b.Run("ipfilter-"+v.String(), func(b *testing.B) {
					benchPeerIPFilter(b, impl, v, runs, r)
					res.write(b)
				})
			}
			b.Run("failover", func(b *testing.B) {
				benchPeerFailover(b, impl, runs, r)
				res.write(b)
			})
			b.Run("bgp", func(b *testing.B) {
				benchPeerBGP(b, impl, runs, r)
				res.write(b)
			})
			b.Run("load", func(b *testing.B) {
				benchPeerLoad(b, impl, r)
				res.write(b)
			})
		})
	}
}

// peerOpts is the lab every implementation runs in: the traffic lab with
// pvelb replaced by the implementation (pvelb itself as newTrafficLab
// starts it).
func peerOpts(impl lbImpl, v pvefw.Variant, ipfilterOff bool, period time.Duration) trafficOpts {
	o := trafficOpts{Variant: v, FWPeriod: period, IPFilterOff: ipfilterOff}
	if _, ok := impl.(pvelbImpl); !ok {
		o.Peer = impl
	}
	return o
}

// peerGiveUp is how many runs in a row may end without an HTTP answer,
// none having had one, before the scenario stops: a VIP that is never
// admitted stays unreachable, and waiting out every run of it would add
// minutes to the benchmark that measure nothing more.
const peerGiveUp = 3

// peerReachWait bounds the wait for a first HTTP answer behind the IP
// filter: two and a half passes of pve-firewall's 10 s loop, after which a
// VIP that is not admitted will not be.
const peerReachWait = 25 * time.Second

// benchPeerIPFilter: every VM's firewall on (variant v: pve-firewall or
// proxmox-firewall), ipfilter-net0 holding only the VM's own addresses and
// pod ranges (what the user admitted), the firewall at its real period
// (10 s, 5 s). Per run: create a Service, time to EXTERNAL-IP and to the
// first HTTP answer from the client, bounded by peerReachWait. Results go
// under "ipfilter-" (classic) or "nft-ipfilter-" (nftables).
func benchPeerIPFilter(b *testing.B, impl lbImpl, v pvefw.Variant, runs int, r *peerResult) {
	l := newTrafficLab(b, peerOpts(impl, v, false, -1))
	period := l.fw.Options().Period
	var addr, first []time.Duration
	reached, done := 0, 0
	for i := range runs {
		// As BenchmarkServiceToFirstHTTP: a random phase against the
		// firewall's loop, and a run starts only once the firewall has
		// applied the previous Service's release (the next Service gets
		// the same address, which must not still be admitted).
		time.Sleep(rand.N(period))
		ft := l.timeToHTTP(b, fmt.Sprintf("ipf-%d", i), peerReachWait)
		time.Sleep(period + time.Second)
		done++
		addr = append(addr, ft.addr)
		if ft.http > 0 {
			reached++
			first = append(first, ft.http)
		}
		if reached == 0 && done == peerGiveUp {
			break
		}
	}
	key := ipfilterKey(v)
	reachable := fmt.Sprintf("%d of %d", reached, done)
	if done < runs {
		reachable += fmt.Sprintf(" (stopped after %d without an answer)", done)
	}
	r.set(key+"reachable", reachable)
	r.set(key+"address", msStats(addr))
	if len(first) > 0 {
		r.set(key+"http", sStats(first))
	} else {
		r.set(key+"http", fmt.Sprintf("never (within %s)", peerReachWait))
	}
	b.Logf("%s behind the IP filter (%s): reached %d of %d; address %v; first HTTP %v", impl.name(), v, reached, done, addr, first)
}

// ipfilterKey prefixes the IP filter scenario's results by firewall
// variant.
func ipfilterKey(v pvefw.Variant) string {
	if v == pvefw.Nftables {
		return "nft-ipfilter-"
	}
	return "ipfilter-"
}

// timeToHTTP creates a Service and returns when it had its address and
// when the client first got an HTTP answer through it (0: not within
// wait), then deletes it and waits until it is gone.
func (l *trafficLab) timeToHTTP(b *testing.B, name string, wait time.Duration) firstTimes {
	ctx, cancel := context.WithTimeout(context.Background(), wait+30*time.Second)
	defer cancel()
	if err := l.net.Client.FlushNeigh(ctx); err != nil {
		b.Fatal(err)
	}
	var ft firstTimes
	t0 := time.Now()
	l.service(b, name)
	var vip netip.Addr
	for !vip.IsValid() {
		if ctx.Err() != nil {
			b.Fatalf("%s: no address within %s", name, wait+30*time.Second)
		}
		s, err := l.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			vip, ft.addr = netip.MustParseAddr(s.Status.LoadBalancer.Ingress[0].IP), time.Since(t0)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for time.Since(t0) < wait {
		if _, err := l.get(ctx, tlURL(vip, 80), 300*time.Millisecond); err == nil {
			ft.http = time.Since(t0)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.deleteService(b, name)
	return ft
}

func (l *trafficLab) deleteService(b testing.TB, name string) {
	if err := l.kube.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	Eventually(b, time.Minute, name+" gone", func(ctx context.Context) error {
		_, err := l.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errorf("still there (%v)", err)
	})
}

// peerFaultWindow is how long the client keeps sending after a fault: long
// enough for the slowest documented failover (kube-vip's lease, MetalLB's
// memberlist) to have happened.
const peerFaultWindow = 15 * time.Second

// benchPeerFailover runs with the VM firewalls off, so every implementation
// carries traffic: time to EXTERNAL-IP and first answer, then, on one
// resident Service, SIGKILL of the announcer answering for it and a cut of
// its node's link, each with a request every 10 ms on a new connection
// (client outage, failed requests), a restart of a non-owner announcer
// (gratuitous packets for the VIP, the client's neighbour entry) and a
// one-way partition of the owner's membership traffic (distinct MACs
// answering the VIP), then a graceful rolling restart of every announcer
// (peers_restart_test.go). Kills, cuts and rollouts each hold keep-alive
// connections across the fault and count those it broke.
func benchPeerFailover(b *testing.B, impl lbImpl, runs int, r *peerResult) {
	l := newTrafficLab(b, peerOpts(impl, pvefw.Classic, true, 0))
	var addr, first []time.Duration
	for i := range runs {
		ft := l.timeToHTTP(b, fmt.Sprintf("new-%d", i), time.Minute)
		if ft.http == 0 {
			b.Fatalf("%s: run %d: no HTTP answer within a minute with the firewall off", impl.name(), i)
		}
		addr = append(addr, ft.addr)
		first = append(first, ft.http)
	}
	r.set("address", msStats(addr))
	r.set("http", msStats(first))

	l.service(b, "resident")
	vip := l.vips(b, "resident", 1)[0]
	url := tlURL(vip, 80)
	l.waitHTTP(b, url, time.Minute)

	for _, f := range []struct {
		key    string
		inject func(owner *netlab.Host)
		heal   func(owner *netlab.Host)
	}{
		{"kill", func(o *netlab.Host) { _ = syscall.Kill(-l.ann[o.Name].cmd.Process.Pid, syscall.SIGKILL) },
			func(o *netlab.Host) { impl.startAnnouncer(l, o) }},
		{"linkcut", func(o *netlab.Host) {
			if err := o.CutLink(); err != nil {
				b.Fatal(err)
			}
		}, func(o *netlab.Host) {
			if err := o.RestoreLink(); err != nil {
				b.Fatal(err)
			}
		}},
	} {
		var outage []time.Duration
		var failed, broken []int
		dups := 0
		for i := range runs {
			owner := l.owner(b, vip, 30*time.Second)
			// The owner's own backends leave the Service first, as they
			// would once the node is found gone: what is measured is the
			// address moving, not requests forwarded to a cut-off pod.
			l.setNodePodsReady(b, owner, false)
			held := l.holdConns(b, url, peerHeldConns)
			o, n := l.outage(url, func() { f.inject(owner) }, peerFaultWindow)
			nb, how := held.check()
			broken = append(broken, nb)
			b.Logf("%s %s run %d: %d of %d held connections broken %v", impl.name(), f.key, i, nb, peerHeldConns, how)
			f.heal(owner)
			l.setNodePodsReady(b, owner, true)
			outage = append(outage, o)
			failed = append(failed, n)
			dup := l.staleAnswerer(b, owner, vip)
			if dup {
				dups++
			}
			b.Logf("%s %s run %d: owner %s, outage %s, %d failed, still answering after recovery: %t", impl.name(), f.key, i, owner.Name, o, n, dup)
			l.settle(b, url)
		}
		r.set(f.key+"-dup", fmt.Sprintf("%d of %d", dups, runs))
		r.set(f.key+"-outage", msStats(outage))
		r.set(f.key+"-failed", intStats(failed))
		r.set(f.key+"-broken", brokenStats(broken))
	}

	l.benchNonOwnerRestart(b, impl, vip, url, r)
	l.benchPartition(b, impl, vip, url, r)
	l.benchPeerRollingRestart(b, impl, vip, url, runs, r)
}

// staleDupWait is how long, after the faulted node is back, two nodes may
// answer for the VIP before that counts as a lasting duplicate.
const staleDupWait = 20 * time.Second

// staleAnswerer waits until exactly one node answers the client's ARP
// requests for vip. When two still do after staleDupWait it reports true
// and removes vip from the faulted node's link, where kube-vip (which binds
// its VIPs to the interface) left it, so the next run starts from one
// owner.
func (l *trafficLab) staleAnswerer(b *testing.B, faulted *netlab.Host, vip netip.Addr) bool {
	for end := time.Now().Add(staleDupWait); time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		macs, err := l.net.Client.Arping(ctx, vip, 3, 100*time.Millisecond)
		cancel()
		if err == nil && len(macs) == 1 {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := faulted.Run(context.Background(), "ip", "addr", "del", netip.PrefixFrom(vip, 32).String(), "dev", faulted.Link)
	b.Logf("%s still answers for %s %s after recovery; removed it from %s: %v %s", faulted.Name, vip, staleDupWait, faulted.Link, err, out)
	return true
}

// setNodePodsReady sets the readiness of the backend pods on node h and
// waits for kube-proxy to have applied it (one sync period at most).
func (l *trafficLab) setNodePodsReady(b *testing.B, h *netlab.Host, ready bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range l.pods {
		if p.Node.Name == h.Name {
			if err := p.SetReady(ctx, ready); err != nil {
				b.Fatal(err)
			}
		}
	}
	time.Sleep(2 * time.Second)
}

// settle waits until the VIP answers again and gives elections a moment:
// the next run must start from one stable owner.
func (l *trafficLab) settle(b *testing.B, url string) {
	l.waitHTTP(b, url, time.Minute)
	time.Sleep(3 * time.Second)
}

// outage sends a request every 10 ms on a new connection (1 s timeout),
// calls fault after one second, and keeps sending for window. It returns
// the longest time from a failed request to the next one that succeeded (0
// when none failed) and how many failed (longestOutage).
func (l *trafficLab) outage(url string, fault func(), window time.Duration) (time.Duration, int) {
	s := l.sampleHTTP(url)
	time.Sleep(time.Second)
	fault()
	time.Sleep(window)
	return s.stop()
}

// benchNonOwnerRestart restarts (SIGTERM, start) the announcer of a node
// that does not answer for the VIP and records, for 10 s, gratuitous
// packets for the VIP on the bridge and the client's neighbour entry.
func (l *trafficLab) benchNonOwnerRestart(b *testing.B, impl lbImpl, vip netip.Addr, url string, r *peerResult) {
	var garps, moved []int
	for range max(1, min(3, len(l.net.Nodes))) {
		owner := l.owner(b, vip, 30*time.Second)
		var other *netlab.Host
		for _, n := range l.net.Nodes {
			if n != owner {
				other = n
				break
			}
		}
		// The client's entry starts at the owner: any node forwards to the
		// Service, so an entry left at the previous scenario's takeover
		// node would still carry traffic and look like a move.
		if err := l.net.Client.FlushNeigh(context.Background()); err != nil {
			b.Fatal(err)
		}
		if _, err := l.get(context.Background(), url, time.Second); err != nil {
			b.Fatal(err)
		}
		mon, err := l.net.WatchBridge()
		if err != nil {
			b.Fatal(err)
		}
		// The client's neighbour entry, read every 20 ms: a gratuitous
		// packet from the restarted node can move it there and back
		// between two reads seconds apart.
		movedTo := ""
		l.ann[other.Name].Stop()
		impl.startAnnouncer(l, other)
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if n, err := l.net.Client.Neigh(context.Background(), vip); err == nil && n.MAC != nil && n.MAC.String() == other.MAC.String() && movedTo == "" {
				movedTo = n.MAC.String()
			}
		}
		_ = mon.Close()
		g := mon.Gratuitous(vip)
		count := 0
		for mac, ts := range g {
			if mac != owner.MAC.String() {
				count += len(ts)
			}
		}
		m := 0
		if movedTo != "" {
			m = 1
		}
		garps = append(garps, count)
		moved = append(moved, m)
		b.Logf("%s: restart of non-owner %s: %d gratuitous packets for %s from other nodes than %s; client's entry moved to %q\n%s",
			impl.name(), other.Name, count, vip, owner.Name, movedTo, mon.Timeline(vip))
		l.settle(b, url)
	}
	r.set("nonowner-garps", intStats(garps))
	r.set("nonowner-moved", fmt.Sprintf("%d of %d", sum(moved), len(moved)))
}

// memberPort is the UDP port of an implementation's membership traffic
// between announcers (0: none; kube-vip elects through apiserver Leases).
func memberPort(impl lbImpl) int {
	switch impl.(type) {
	case pvelbImpl:
		return tlMemberUDP
	case *metallbImpl:
		return 7946 // memberlist's default, MetalLB's --ml-bindport
	}
	return 0
}

// benchPartition drops, for 10 s, the membership datagrams arriving at the
// VIP's owner (one-way: it still sends) and records the distinct MACs that
// answer the client's ARP requests for the VIP meanwhile.
func (l *trafficLab) benchPartition(b *testing.B, impl lbImpl, vip netip.Addr, url string, r *peerResult) {
	port := memberPort(impl)
	if port == 0 {
		r.set("partition-macs", "n/a (Leases)")
		r.set("partition-split", "n/a (Leases)")
		return
	}
	owner := l.owner(b, vip, 30*time.Second)
	mon, err := l.net.WatchBridge()
	if err != nil {
		b.Fatal(err)
	}
	if err := owner.DropUDP(port, netlab.In); err != nil {
		b.Fatal(err)
	}
	macs := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, _ := l.net.Client.Arping(ctx, vip, 3, 100*time.Millisecond)
		cancel()
		for _, m := range got {
			macs[m.String()] = true
		}
	}
	if err := owner.Heal(); err != nil {
		b.Fatal(err)
	}
	_ = mon.Close()
	var split time.Duration
	splits := mon.SplitAnswers(vip, splitWindow)
	for _, sp := range splits {
		split += sp.Duration()
	}
	r.set("partition-macs", strconv.Itoa(len(macs)))
	r.set("partition-split", fmt.Sprintf("%d (%s)", len(splits), split.Round(time.Millisecond)))
	b.Logf("%s: owner %s partitioned (membership in): MACs answering %v; splits %v\n%s", impl.name(), owner.Name, keys(macs), splits, mon.Timeline(vip))
	l.settle(b, url)
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

func msStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f / %.0f ms", msOf(quantile(ds, 0.5)), msOf(quantile(ds, 0.9)))
}

func sStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f / %.1f s", quantile(ds, 0.5).Seconds(), quantile(ds, 0.9).Seconds())
}

func intStats(xs []int) string {
	ds := make([]time.Duration, len(xs))
	for i, x := range xs {
		ds[i] = time.Duration(x)
	}
	return fmt.Sprintf("%d / %d", quantile(ds, 0.5), quantile(ds, 0.9))
}

// peerResults is the table BenchmarkPeers writes.
type peerResults struct {
	runs  int
	mu    sync.Mutex
	impls []*peerResult
}

type peerResult struct {
	impl lbImpl
	mu   sync.Mutex
	vals map[string]string
}

func (p *peerResults) add(impl lbImpl) *peerResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &peerResult{impl: impl, vals: map[string]string{}}
	p.impls = append(p.impls, r)
	return r
}

func (r *peerResult) set(k, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vals[k] = v
}

func (r *peerResult) get(k string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.vals[k]; ok {
		return v
	}
	return "not run"
}

// peerRows are the table's rows: result key and what it says.
var peerRows = []struct{ key, what string }{
	{"ipfilter-reachable", "pve-firewall, IP filter on (ipfilter-net0: VM's own addresses): runs with an HTTP answer within 25 s"},
	{"ipfilter-address", "IP filter on: Service created → EXTERNAL-IP, median / p90"},
	{"ipfilter-http", "IP filter on: Service created → first HTTP answer, median / p90"},
	{"nft-ipfilter-reachable", "nftables firewall (proxmox-firewall), IP filter on: runs with an HTTP answer within 25 s"},
	{"nft-ipfilter-address", "nftables firewall, IP filter on: Service created → EXTERNAL-IP, median / p90"},
	{"nft-ipfilter-http", "nftables firewall, IP filter on: Service created → first HTTP answer, median / p90"},
	{"address", "IP filter off: Service created → EXTERNAL-IP, median / p90"},
	{"http", "IP filter off: Service created → first HTTP answer, median / p90"},
	{"kill-outage", "SIGKILL of the VIP's announcer: client outage (HTTP every 10 ms), median / p90"},
	{"kill-failed", "SIGKILL of the VIP's announcer: failed requests, median / p90"},
	{"kill-broken", "SIGKILL of the VIP's announcer: established keep-alive connections (opened before, one request each after the 15 s window) broken, median / p90"},
	{"kill-dup", "SIGKILL, then restart of that announcer: runs where two nodes still answer ARP for the VIP 20 s later"},
	{"linkcut-outage", "link of the VIP's node cut: client outage (HTTP every 10 ms), median / p90"},
	{"linkcut-failed", "link of the VIP's node cut: failed requests, median / p90"},
	{"linkcut-broken", "link of the VIP's node cut: established keep-alive connections (opened before, one request each after the 15 s window) broken, median / p90"},
	{"linkcut-dup", "link cut, then restored: runs where two nodes still answer ARP for the VIP 20 s later"},
	{"rollout-outage", "graceful rolling restart of every announcer (SIGTERM, exit, start, 5 s settle, next node): client outage (HTTP every 10 ms), median / p90"},
	{"rollout-failed", "graceful rolling restart: failed requests, median / p90"},
	{"rollout-moves", "graceful rolling restart: handovers of the VIP between MACs (ARP probed every 20 ms; a moment of two answering counts once), median / p90"},
	{"rollout-broken", "graceful rolling restart: established keep-alive connections (opened before, one request each after) broken, median / p90"},
	{"rollout-dup", "graceful rolling restart: runs where two nodes still answer ARP for the VIP 20 s later"},
	{"nonowner-garps", "restart of a non-owner announcer: gratuitous packets for the VIP from non-owners, median / p90"},
	{"nonowner-moved", "restart of a non-owner announcer: runs where the client's neighbour entry moved to the restarted node (read every 20 ms for 10 s)"},
	{"partition-macs", "one-way partition of the owner's membership traffic (10 s): distinct MACs answering, in turn or at once"},
	{"partition-split", "same: periods with two MACs answering within 60 ms (total time)"},
	{"bgp-route-first", "BGP: Service created → first route for its VIP on the router (BIRD), median / p90"},
	{"bgp-route-all", "BGP: Service created → routes from all three nodes on the router (ECMP), median / p90"},
	{"bgp-term-withdrawn", "BGP: SIGTERM of one node's announcer → its next hop withdrawn on the router, median / p90"},
	{"bgp-term-back", "BGP: that announcer started again → its next hop back on the router, median / p90"},
	{"bgp-kill-withdrawn", "BGP: SIGKILL of one node's announcer (and its children) → its next hop withdrawn on the router, median / p90"},
	{"load-converge-100", fmt.Sprintf("100 IPv6 Services created, %d at a time → every one has its address", loadCreators)},
	{"load-burst-100", "the announcers' requests to the apiserver meanwhile (from the apiserver's APF dispatch counters for their own user), by verb"},
	{"load-api-100", fmt.Sprintf("steady API load with 100 Services: the announcers' requests per second (%s window from %s after the last address), by verb", loadWindow, loadSettle)},
	{"load-rss-100", "memory with 100 VIPs: resident set of each node's announcer process(es), median / max over nodes"},
	{"load-converge-1000", "900 more (1000 in all) → every one has its address"},
	{"load-burst-1000", "the announcers' requests meanwhile, by verb"},
	{"load-api-1000", "steady API load with 1000 Services: the announcers' requests per second, by verb (as with 100)"},
	{"load-rss-1000", "memory with 1000 VIPs: resident set of each node's announcer process(es), median / max over nodes"},
	{"load-time", "load scenario: lab start to the last window's end"},
}

// write renders the table into PVELB_PEERS_RESULTS, if set, after every
// scenario: a run stopped half way still leaves what it measured.
func (p *peerResults) write(b *testing.B) {
	path := os.Getenv("PVELB_PEERS_RESULTS")
	if path == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var s strings.Builder
	s.WriteString("# pvelb, MetalLB and kube-vip side by side\n\n")
	s.WriteString("Written by `make bench-peers` (BenchmarkPeers in test/e2e/peers_bench_test.go); do not edit by hand.\n")
	fmt.Fprintf(&s, "Three nodes on one bridge, real apiserver, kube-controller-manager and kube-proxy (iptables), one backend pod per node,\n"+
		"Proxmox firewall emulated (pve-firewall's or proxmox-firewall's rules, applied by nftables on the bridge); %d runs per timed row; %s, %s.\n\n",
		p.runs, time.Now().UTC().Format("2006-01-02"), goMachine())
	s.WriteString("| scenario |")
	for _, r := range p.impls {
		fmt.Fprintf(&s, " %s |", r.impl.name())
	}
	s.WriteString("\n|---|")
	for range p.impls {
		s.WriteString("---|")
	}
	s.WriteString("\n")
	for _, row := range peerRows {
		fmt.Fprintf(&s, "| %s |", row.what)
		for _, r := range p.impls {
			fmt.Fprintf(&s, " %s |", r.get(row.key))
		}
		s.WriteString("\n")
	}
	s.WriteString("\n## How each was run\n\n")
	for _, r := range p.impls {
		fmt.Fprintf(&s, "- **%s** (%s): %s.%s\n", r.impl.name(), r.impl.version(), r.impl.configured(), bgpConfigured(r.impl))
	}
	if err := os.WriteFile(path, []byte(s.String()), 0o644); err != nil {
		b.Errorf("writing %s: %v", path, err)
	}
}

// goMachine names the machine's CPU count, which the timings depend on.
func goMachine() string {
	n := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n = strings.Count(string(b), "\nprocessor")
		if strings.HasPrefix(string(b), "processor") {
			n++
		}
	}
	return fmt.Sprintf("%d CPUs", n)
}
