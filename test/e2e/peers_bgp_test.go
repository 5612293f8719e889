package e2e

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pvelb/pvelb/test/bird"
	"github.com/pvelb/pvelb/test/kubeapply"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
)

// bgpPeerImpl is an implementation with a BGP mode (pvelb, MetalLB; not
// kube-vip as the lab runs it): BenchmarkPeers' "bgp" scenario measures it
// against the lab's BIRD router.
type bgpPeerImpl interface {
	// setupBGP turns the implementation, started in its L2 configuration
	// by newTrafficLab, into advertising its Service addresses over iBGP
	// (AS bgpLabASN on both sides) to the router at addr, configured as
	// its docs show for BGP, with each implementation's default timers.
	setupBGP(t testing.TB, l *trafficLab, router netip.Addr)
	// bgpConfigured says in one sentence how it was configured for BGP.
	bgpConfigured() string
}

// bgpConfigured is the sentence on impl's BGP configuration the results
// add to its line (empty: no BGP mode measured).
func bgpConfigured(impl lbImpl) string {
	if bi, ok := bgpVariant(impl).(bgpPeerImpl); ok {
		return " BGP rows: " + bi.bgpConfigured() + "; BIRD 2 passive on the bridge, iBGP AS 64512, its defaults otherwise."
	}
	return ""
}

// bgpVariant is the implementation the BGP scenario runs: kube-vip's BGP
// mode is its announcers' environment, so it needs a variant of its own.
func bgpVariant(impl lbImpl) lbImpl {
	if _, ok := impl.(kubeVIPImpl); ok {
		return &kubeVIPBGPImpl{}
	}
	return impl
}

func (pvelbImpl) bgpConfigured() string {
	return "a BGPPeer for the router (defaults: no password, hold time and timers of pvelb) and the IPPool's announce.mode bgp, every node advertising (ECMP)"
}

func (*metallbImpl) bgpConfigured() string {
	return "the speakers in native BGP mode with one BGPPeer (metallb.io/v1beta2, defaults) and one BGPAdvertisement for the IPAddressPool instead of the L2Advertisement"
}

// setupBGP: a BGPPeer for the router and the pool's announce.mode set to
// bgp (docs/install.md, manifests/examples/bgp.yaml; no password, which
// the router does not ask for).
func (pvelbImpl) setupBGP(t testing.TB, l *trafficLab, router netip.Addr) {
	t.Helper()
	ctx := context.Background()
	peer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "BGPPeer",
		"metadata": map[string]any{"name": "router"},
		"spec":     map[string]any{"peerAddress": router.String(), "peerASN": int64(bgpLabASN), "myASN": int64(bgpLabASN)},
	}}
	if _, err := l.dyn.Resource(bgppeerGVR).Create(ctx, peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.dyn.Resource(ippoolGVR).Patch(ctx, tlPool, types.MergePatchType, []byte(`{"spec":{"announce":{"mode":"bgp"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setupBGP: MetalLB's BGP configuration from its docs (a BGPPeer, the
// IPAddressPool and a BGPAdvertisement for it) in place of the
// L2Advertisement; the speakers run in native BGP mode already
// (METALLB_BGP_TYPE=native).
func (*metallbImpl) setupBGP(t testing.TB, l *trafficLab, router netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ap, err := kubeapply.New(l.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := kubeapply.Decode(fmt.Appendf(nil, `apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: %[1]s}
spec: {myASN: %[2]d, peerASN: %[2]d, peerAddress: %[3]s}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: lab, namespace: %[1]s}
spec: {ipAddressPools: [lab]}
`, metallbNS, bgpLabASN, router))
	if err != nil {
		t.Fatal(err)
	}
	if err := ap.Apply(ctx, cfg, false); err != nil {
		t.Fatal(err)
	}
	l2 := l.dyn.Resource(metallbGVR("l2advertisements")).Namespace(metallbNS)
	if err := l2.Delete(ctx, "lab", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func metallbGVR(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: resource}
}

// kubeVIPBGPImpl is kube-vip in BGP mode: every node's kube-vip advertises
// every Service address (no per-Service election), with the environment
// `kube-vip manifest daemonset --interface lo --services --bgp --localAS
// 64512 --bgpRouterID 0.0.0.0 --bgppeers <router>:64512::false` generates
// (kube-vip v1.0.0), except the router ID, which comes from
// bgp_routerinterface (the node's own address): one shared 0.0.0.0 is no
// router ID.
type kubeVIPBGPImpl struct {
	kubeVIPImpl
	router netip.Addr // valid once setupBGP ran: announcers start in BGP mode
}

func (*kubeVIPBGPImpl) bgpConfigured() string {
	return "kube-vip with the environment of `kube-vip manifest daemonset --interface lo --services --bgp --localAS 64512 --bgppeers <router>:64512::false` (bgp_routerinterface for the router ID), every node advertising"
}

// setupBGP replaces the ARP-mode announcers setup started with BGP ones.
func (k *kubeVIPBGPImpl) setupBGP(t testing.TB, l *trafficLab, router netip.Addr) {
	t.Helper()
	k.router = router
	for _, h := range l.net.Nodes {
		l.ann[h.Name].Stop()
		k.startAnnouncer(l, h)
	}
}

func (k *kubeVIPBGPImpl) startAnnouncer(l *trafficLab, h *netlab.Host) *Process {
	if !k.router.IsValid() {
		return k.kubeVIPImpl.startAnnouncer(l, h)
	}
	home := homeWithKubeconfig(l.top, l, "kube-vip-"+h.Name, l.cp.AnnouncerKubeconfig)
	env := []string{
		"vip_arp=false",
		"port=6443",
		"vip_nodename=" + h.Name,
		"vip_interface=lo",
		"dns_mode=first",
		"svc_enable=true",
		"svc_leasename=plndr-svcs-lock",
		"bgp_enable=true",
		"bgp_routerinterface=" + h.Link,
		"bgp_as=" + fmt.Sprint(bgpLabASN),
		"bgp_peeraddress=",
		"bgp_peerpass=",
		"bgp_peeras=65000",
		"bgp_peers=" + k.router.String() + ":" + fmt.Sprint(bgpLabASN) + "::false",
		"vip_address=",
		"prometheus_server=:2112",
		"HOME=" + home,
	}
	p := peerStart(l, h.Netns, env, peerBinary(l.top, "kube-vip"), "manager")
	l.ann[h.Name] = p
	return p
}

// widenInt32Bounds fixes, in CRDs about to be applied, every integer
// property declared `format: int32` with a maximum beyond int32. MetalLB
// v0.15.2's BGPPeer declares myASN and peerASN (both versions) that way
// (`format: int32`, `maximum: 4294967295`: ASNs are 32-bit unsigned), and
// kube-apiserver 1.37 rejects every BGPPeer object of such a CRD, even one
// with small ASNs ("Maximum boundary value must be of type integer with
// format int32 in spec.myASN"), though it accepts the CRD. MetalLB v0.16.2
// ships the same fields as `format: int64` (controller-gen v0.22), which is
// what this writes; nothing else of the schema changes.
func widenInt32Bounds(objs []*unstructured.Unstructured) {
	var walk func(v any)
	walk = func(v any) {
		switch n := v.(type) {
		case map[string]any:
			if n["format"] == "int32" {
				if m, ok := n["maximum"].(int64); ok && m > math.MaxInt32 {
					n["format"] = "int64"
				}
				if m, ok := n["maximum"].(float64); ok && m > math.MaxInt32 {
					n["format"] = "int64"
				}
			}
			for _, c := range n {
				walk(c)
			}
		case []any:
			for _, c := range n {
				walk(c)
			}
		}
	}
	for _, o := range objs {
		walk(o.Object)
	}
}

// bgpNoBGP is what the BGP rows say for an implementation the scenario
// does not set up in BGP mode.
const bgpNoBGP = "n/a"

// bgpWait bounds each wait for the router's routes: longer than any
// implementation needs, short enough for a run that never gets there to
// end the scenario in minutes.
const bgpWait = 30 * time.Second

// bgpPoll is how often the router's routes are read: one `show route`
// over BIRD's control socket costs well under a millisecond.
const bgpPoll = time.Millisecond

// benchPeerBGP runs the implementation in BGP mode against BIRD in a router
// namespace on the lab bridge (iBGP from every node, the VM firewalls off):
// per run, a Service's time from creation to its VIP's first route on the
// router and to the routes from all nodes; then, on one resident Service,
// per run one node's announcer gets SIGTERM (as the kubelet stops a pod)
// and the time until the router has withdrawn that node's next hop, the
// time from its restart until the next hop is back, and the same withdrawal
// after SIGKILL of the announcer and its children (a container killed).
func benchPeerBGP(b *testing.B, impl lbImpl, runs int, r *peerResult) {
	impl = bgpVariant(impl)
	bi, ok := impl.(bgpPeerImpl)
	if !ok {
		for _, row := range peerRows {
			if strings.HasPrefix(row.key, "bgp-") {
				r.set(row.key, bgpNoBGP)
			}
		}
		return
	}
	bird.Require(b)
	began := time.Now()
	l := newTrafficLab(b, peerOpts(impl, pvefw.Classic, true, 0))
	router := l.net.AddHost(b, "router", bgpRouterOct)
	// Passive, defaults otherwise: each implementation's own timers apply.
	var protos strings.Builder
	for i, n := range l.net.Nodes {
		fmt.Fprintf(&protos, `protocol bgp n%d {
	local as %d; neighbor %s as %d; passive on; direct;
	ipv4 { import all; export none; gateway direct; };
}
`, i+1, bgpLabASN, n.IPv4.Addr(), bgpLabASN)
	}
	d := bird.Start(b, router, protos.String())
	bi.setupBGP(b, l, router.IPv4.Addr())
	Eventually(b, time.Minute, "every node's session Established", func(context.Context) error {
		st, err := d.ProtocolStates()
		if err != nil {
			return err
		}
		for i := range l.net.Nodes {
			if p := fmt.Sprintf("n%d", i+1); !strings.HasPrefix(st[p], "Established") {
				return fmt.Errorf("%s is %q", p, st[p])
			}
		}
		return nil
	})
	conn, err := d.Dial()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	nodes := len(l.net.Nodes)

	// Service created → first route, → every node's route.
	var first, all []time.Duration
	missed := 0
	for i := range runs {
		name := fmt.Sprintf("bgp-%d", i)
		t0 := time.Now()
		l.service(b, name)
		// A route that appears before the address is read is seen at
		// the first poll: the figure is late by one status read at most.
		p := netip.PrefixFrom(l.waitVIP(b, name, t0), 32)
		addr := time.Since(t0)
		f, okF := bgpWaitPaths(b, conn, p, func(n int) bool { return n >= 1 })
		a, okA := bgpWaitPaths(b, conn, p, func(n int) bool { return n >= nodes })
		if okF && okA {
			first, all = append(first, f.Sub(t0)), append(all, a.Sub(t0))
		} else {
			missed++
		}
		b.Logf("%s: %s: address read after %s, first route after %s, %d routes after %s (reached: %t, %t)", impl.name(), name, addr, f.Sub(t0), nodes, a.Sub(t0), okF, okA)
		l.deleteService(b, name)
		// The next Service likely gets the same address.
		if _, ok := bgpWaitPaths(b, conn, p, func(n int) bool { return n == 0 }); !ok {
			b.Fatalf("%s: route for %s still on the router %s after its Service was deleted", impl.name(), p, bgpWait)
		}
	}
	r.set("bgp-route-first", bgpStats(first, missed))
	r.set("bgp-route-all", bgpStats(all, missed))

	l.service(b, "bgp-resident")
	p := netip.PrefixFrom(l.vips(b, "bgp-resident", 1)[0], 32)
	if _, ok := bgpWaitPaths(b, conn, p, func(n int) bool { return n == nodes }); !ok {
		b.Fatalf("%s: %s not routed via all %d nodes", impl.name(), p, nodes)
	}
	for _, f := range []struct {
		key string
		sig syscall.Signal
		pid func(p *Process) int
	}{
		// SIGTERM to the announcer alone, as the kubelet signals a
		// container's first process; SIGKILL to its process group, as a
		// container's processes all die.
		{"term", syscall.SIGTERM, func(p *Process) int { return p.cmd.Process.Pid }},
		{"kill", syscall.SIGKILL, func(p *Process) int { return -p.cmd.Process.Pid }},
	} {
		var gone, back []time.Duration
		missedGone, missedBack := 0, 0
		for i := range runs {
			h := l.net.Nodes[i%nodes]
			proc := l.ann[h.Name]
			t0 := time.Now()
			_ = syscall.Kill(f.pid(proc), f.sig)
			g, ok := bgpWaitPaths(b, conn, p, func(n int) bool { return n < nodes })
			if ok && !bgpViaGone(b, d, p, h) {
				ok = false // another node's route went, not this one's
			}
			if ok {
				gone = append(gone, g.Sub(t0))
			} else {
				missedGone++
			}
			select {
			case <-proc.done:
			case <-time.After(15 * time.Second):
				b.Logf("%s on %s still running 15 s after %s; killing it", impl.name(), h.Name, f.sig)
				_ = syscall.Kill(-proc.cmd.Process.Pid, syscall.SIGKILL)
				<-proc.done
			}
			t1 := time.Now()
			impl.startAnnouncer(l, h)
			k, okBack := bgpWaitPaths(b, conn, p, func(n int) bool { return n == nodes })
			if okBack {
				back = append(back, k.Sub(t1))
			} else {
				missedBack++
			}
			b.Logf("%s: %s of %s's announcer: its next hop withdrawn after %s (%t); restarted, back after %s (%t)",
				impl.name(), f.sig, h.Name, g.Sub(t0), ok, k.Sub(t1), okBack)
			if !okBack {
				b.Fatalf("%s: %s's route for %s not back within %s of its announcer's restart", impl.name(), h.Name, p, bgpWait)
			}
		}
		r.set("bgp-"+f.key+"-withdrawn", bgpStats(gone, missedGone))
		if f.key == "term" {
			r.set("bgp-term-back", bgpStats(back, missedBack))
		}
	}
	b.Logf("%s: BGP scenario took %s", impl.name(), time.Since(began).Round(time.Second))
}

// waitVIP waits, reading every 5 ms, until the Service has an address.
func (l *trafficLab) waitVIP(b *testing.B, name string, since time.Time) netip.Addr {
	for time.Since(since) < bgpWait {
		s, err := l.kube.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			return netip.MustParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("%s: no address within %s", name, bgpWait)
	return netip.Addr{}
}

// bgpWaitPaths polls the router every bgpPoll until the number of paths
// it holds for p satisfies cond, and returns when it first did, bounded
// by bgpWait (false: never).
func bgpWaitPaths(b *testing.B, conn *bird.Conn, p netip.Prefix, cond func(int) bool) (time.Time, bool) {
	start := time.Now()
	for time.Since(start) < bgpWait {
		n, err := conn.PathCount(p)
		if err != nil {
			b.Fatal(err)
		}
		if cond(n) {
			return time.Now(), true
		}
		time.Sleep(bgpPoll)
	}
	return time.Now(), false
}

// bgpViaGone reports whether the router no longer holds h's path for p.
func bgpViaGone(b *testing.B, d *bird.Daemon, p netip.Prefix, h *netlab.Host) bool {
	paths, err := d.Routes(p)
	if err != nil {
		b.Fatal(err)
	}
	return !slices.Contains(bird.Vias(paths), h.IPv4.Addr().String())
}

// bgpStats is msStats, saying how many runs never got there.
func bgpStats(ds []time.Duration, missed int) string {
	s := msStats(ds)
	if missed > 0 {
		s += fmt.Sprintf(" (%d of %d runs: not within %s)", missed, len(ds)+missed, bgpWait)
	}
	return s
}

// TestWidenInt32Bounds: only an int32 property whose maximum is beyond
// int32 is widened, wherever it sits in the schema.
func TestWidenInt32Bounds(t *testing.T) {
	objs, err := kubeapply.Decode([]byte(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: bgppeers.metallb.io}
spec:
  versions:
  - name: v1beta2
    schema:
      openAPIV3Schema:
        properties:
          spec:
            properties:
              myASN: {type: integer, format: int32, minimum: 0, maximum: 4294967295}
              port: {type: integer, format: int32, minimum: 0, maximum: 16384}
              count: {type: integer, format: int32}
`))
	if err != nil {
		t.Fatal(err)
	}
	widenInt32Bounds(objs)
	for field, want := range map[string]string{"myASN": "int64", "port": "int32", "count": "int32"} {
		vs, _, _ := unstructured.NestedSlice(objs[0].Object, "spec", "versions")
		got, _, _ := unstructured.NestedString(vs[0].(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", field, "format")
		if got != want {
			t.Errorf("%s: format %q, want %q", field, got, want)
		}
	}
}
