package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/test/bird"
	"github.com/pvelb/pvelb/test/netlab"
)

var bgppeerGVR = schema.GroupVersionResource{Group: "pvelb.io", Version: "v1alpha1", Resource: "bgppeers"}

const (
	bgpLabASN    = 64512 // iBGP, so the pool's local preference reaches BIRD
	bgpHold      = 9 * time.Second
	bgpPassword  = "e2e-md5-password"
	bgpRouterOct = 1
)

// bgpLab is an announcer lab with a BIRD router, a BGPPeer for it (with a
// TCP MD5 password from the Secret the shipped RBAC allows) and a BGP pool.
type bgpLab struct {
	*annLab
	router *netlab.Host
	bird   *bird.Daemon
}

func newBGPLab(t testing.TB) *bgpLab {
	t.Helper()
	bird.Require(t)
	l := &bgpLab{annLab: newAnnLab(t)}
	l.router = l.net.AddHost(t, "router", bgpRouterOct)
	// Passive: every session that comes up was opened by an announcer,
	// which listens on no BGP port.
	var protos strings.Builder
	for i, n := range l.net.Nodes {
		fmt.Fprintf(&protos, `protocol bgp n%d {
	local as %d; neighbor %s as %d; passive on; direct; hold time %d; password "%s";
	ipv4 { import all; export none; gateway direct; };
}
`, i+1, bgpLabASN, n.IPv4.Addr(), bgpLabASN, int(bgpHold/time.Second), bgpPassword)
	}
	l.bird = bird.Start(t, l.router, protos.String())

	ctx := context.Background()
	if _, err := l.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pvelb-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "pvelb-system", Name: "pvelb-bgp-passwords"},
		StringData: map[string]string{"router": bgpPassword}}
	if _, err := l.kube.CoreV1().Secrets("pvelb-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	peer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "BGPPeer",
		"metadata": map[string]any{"name": "router"},
		"spec": map[string]any{
			"peerAddress": l.router.IPv4.Addr().String(), "peerASN": int64(bgpLabASN), "myASN": int64(bgpLabASN),
			"holdTime":          bgpHold.String(),
			"passwordSecretRef": map[string]any{"namespace": "pvelb-system", "name": "pvelb-bgp-passwords", "key": "router"},
		},
	}}
	if _, err := l.dyn.Resource(bgppeerGVR).Create(ctx, peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l.pool(t, "bgp", map[string]any{
		"addresses": []any{"203.0.113.0/24"},
		"announce":  map[string]any{"mode": "bgp", "communities": []any{"65000:100"}, "localPreference": int64(200)},
	})
	return l
}

func (l *annLab) pool(t testing.TB, name string, spec map[string]any) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool", "metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := l.dyn.Resource(ippoolGVR).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startBGP runs announcers with fast BGP reconnects on the given nodes.
func (l *bgpLab) startAll(t testing.TB) {
	for _, n := range l.net.Nodes {
		l.start(t, n, l.secret, "--bgp-connect-retry=1s")
	}
}

func (l *annLab) labelNode(t testing.TB, node, key string, value *string) {
	t.Helper()
	v := "null"
	if value != nil {
		v = `"` + *value + `"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := l.kube.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// cordon sets the Node's spec.unschedulable, as `kubectl cordon` (and a
// drain) does: an announcer stopped on a cordoned node hands its VIPs over
// instead of restarting in place. The pause lets the node's announcer see
// the edit through its watch before the test acts on it.
func (l *annLab) cordon(t testing.TB, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	if _, err := l.kube.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
}

// waitVias waits until BIRD holds exactly these next hops for p.
func (l *bgpLab) waitVias(t testing.TB, p netip.Prefix, timeout time.Duration, want ...string) []bird.Path {
	t.Helper()
	sort.Strings(want)
	var paths []bird.Path
	Eventually(t, timeout, fmt.Sprintf("BIRD next hops for %s = %v", p, want), func(context.Context) error {
		var err error
		if paths, err = l.bird.Routes(p); err != nil {
			return err
		}
		got := bird.Vias(paths)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("next hops %v", got)
		}
		return nil
	})
	return paths
}

func (l *annLab) waitEvent(t testing.TB, svc, reason string, contains ...string) {
	t.Helper()
	Eventually(t, 20*time.Second, reason+" event on "+svc, func(ctx context.Context) error {
		evs, err := l.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + svc})
		if err != nil {
			return err
		}
		var seen []string
	next:
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason != reason {
				continue
			}
			for _, c := range contains {
				if !strings.Contains(e.Message, c) {
					continue next
				}
			}
			return nil
		}
		return fmt.Errorf("events %v", seen)
	})
}

func strptr(s string) *string { return &s }

// TestAnnouncerBGP: real announcers in node namespaces, the real apiserver,
// BIRD as the router. Every eligible node advertises the VIP (ECMP), a node
// labelled exclude-from-external-load-balancers does not, Local services
// follow their endpoints, and routes are withdrawn when a node's announcer
// gets SIGTERM and when the Service is deleted.
func TestAnnouncerBGP(t *testing.T) {
	l := newBGPLab(t)
	n1, n2, n3 := l.net.Nodes[0], l.net.Nodes[1], l.net.Nodes[2]
	l.labelNode(t, n3.Name, corev1.LabelNodeExcludeBalancers, strptr("true"))
	l.startAll(t)
	ctx := context.Background()

	vip := netip.MustParseAddr("203.0.113.10")
	prefix := netip.PrefixFrom(vip, 32)
	l.serviceInPool(t, "bgp", "web", false, vip)

	t.Run("ECMP from every eligible node, the excluded one left out", func(t *testing.T) {
		paths := l.waitVias(t, prefix, 30*time.Second, n1.IPv4.Addr().String(), n2.IPv4.Addr().String())
		for _, p := range paths {
			if p.Attrs["BGP.local_pref"] != "200" || p.Attrs["BGP.community"] != "(65000,100)" {
				t.Errorf("path from %s: local_pref %q communities %q, want 200 and (65000,100) from the pool",
					p.Proto, p.Attrs["BGP.local_pref"], p.Attrs["BGP.community"])
			}
			if p.Attrs["BGP.next_hop"] != p.Via {
				t.Errorf("path from %s: next hop %q is not the node itself (%s)", p.Proto, p.Attrs["BGP.next_hop"], p.Via)
			}
		}
		// Even the excluded node keeps its session: only its route is missing.
		Eventually(t, 20*time.Second, "every session Established (MD5 password from the Secret)", func(context.Context) error {
			st, err := l.bird.ProtocolStates()
			if err != nil {
				return err
			}
			for _, name := range []string{"n1", "n2", "n3"} {
				if st[name] != "Established" {
					return fmt.Errorf("BIRD session %s is %q", name, st[name])
				}
			}
			return nil
		})
		// Outbound only: no announcer listens on a BGP port.
		for _, n := range l.net.Nodes {
			out, err := n.Run(ctx, "ss", "-Hltn", "sport = :179")
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != "" {
				t.Errorf("%s listens for BGP: %s", n.Name, out)
			}
		}
		if v := l.metric(t, n1, "pvelb_announcer_bgp_advertised_ips"); v != 1 {
			t.Errorf("%s advertises %v IPs, want 1", n1.Name, v)
		}
		if v := l.metric(t, n3, "pvelb_announcer_bgp_advertised_ips"); v != 0 {
			t.Errorf("excluded %s advertises %v IPs, want 0", n3.Name, v)
		}
		if v := l.metric(t, n1, `pvelb_announcer_bgp_session_up{address="`+l.router.IPv4.Addr().String()+`",peer="router"}`); v != 1 {
			t.Errorf("session_up on %s = %v", n1.Name, v)
		}
		l.waitEvent(t, "web", "Advertising", "Node "+n1.Name+" ", vip.String())
		l.waitAnnouncers(t, 10*time.Second, "web", vip, v1alpha1.AnnouncementBGP, n1.Name, n2.Name)
		// Each node's session in the BGPPeer's status, the excluded one's too.
		l.waitSessions(t, 10*time.Second, "router", "established", n1.Name, n2.Name, n3.Name)
	})
	if t.Failed() {
		return
	}

	t.Run("announcements and session states are written on change only", func(t *testing.T) {
		// Longer than the announcers' 30 s resync.
		if n := l.countAnnouncementWrites(t, annResync+3*time.Second); n != 0 {
			t.Errorf("%d ServiceAnnouncement changes in a quiet cluster, want 0", n)
		}
	})

	t.Run("removing the exclusion label adds the node", func(t *testing.T) {
		l.labelNode(t, n3.Name, corev1.LabelNodeExcludeBalancers, nil)
		l.waitVias(t, prefix, 10*time.Second, n1.IPv4.Addr().String(), n2.IPv4.Addr().String(), n3.IPv4.Addr().String())
		l.waitAnnouncers(t, 10*time.Second, "web", vip, v1alpha1.AnnouncementBGP, n1.Name, n2.Name, n3.Name)
	})

	t.Run("no node may announce: warning names the reason", func(t *testing.T) {
		l.pool(t, "edge", map[string]any{
			"addresses": []any{"198.51.100.240/28"},
			"announce":  map[string]any{"mode": "bgp", "nodeSelector": map[string]any{"matchLabels": map[string]any{"pvelb.io/edge": "true"}}},
		})
		l.serviceInPool(t, "edge", "edge", false, netip.MustParseAddr("198.51.100.241"))
		l.waitEvent(t, "edge", "NotAnnounced", "198.51.100.241", "NodeSelectorMatchesNone", "IPPool edge")
	})

	t.Run("Local services are advertised only by nodes with a ready endpoint", func(t *testing.T) {
		lvip := netip.MustParseAddr("203.0.113.11")
		lp := netip.PrefixFrom(lvip, 32)
		l.serviceInPool(t, "bgp", "local", true, lvip)
		l.waitEvent(t, "local", "NotAnnounced", "NoReadyEndpoint")
		if paths, err := l.bird.Routes(lp); err != nil || len(paths) != 0 {
			t.Fatalf("Local service without endpoints advertised via %v (%v)", bird.Vias(paths), err)
		}
		l.endpointSlice(t, "local", n2.Name)
		l.waitVias(t, lp, 10*time.Second, n2.IPv4.Addr().String())
	})

	t.Run("a killed BGP speaker process is restarted and advertises again", func(t *testing.T) {
		kids := children(t, l.procs[n1.Name].cmd.Process.Pid)
		if len(kids) != 1 {
			t.Fatalf("announcer on %s has child processes %v, want its one BGP speaker", n1.Name, kids)
		}
		if comm, _ := os.ReadFile("/proc/" + kids[0] + "/comm"); strings.TrimSpace(string(comm)) != "pvelb-bgp-speak" { // comm is cut at 15 bytes
			t.Fatalf("child %s is %q, not pvelb-bgp-speaker", kids[0], comm)
		}
		pid, _ := strconv.Atoi(kids[0])
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		l.waitVias(t, prefix, bgpHold, n2.IPv4.Addr().String(), n3.IPv4.Addr().String())
		l.waitVias(t, prefix, 20*time.Second, n1.IPv4.Addr().String(), n2.IPv4.Addr().String(), n3.IPv4.Addr().String())
		if kids := children(t, l.procs[n1.Name].cmd.Process.Pid); len(kids) != 1 || kids[0] == strconv.Itoa(pid) {
			t.Fatalf("children after the restart %v, want one new speaker", kids)
		}
	})

	t.Run("SIGTERM withdraws the node's route before the session closes", func(t *testing.T) {
		// Only the announcer, as the kubelet signals a container's PID 1:
		// the announcer must stop its speaker child itself.
		speaker := children(t, l.procs[n1.Name].cmd.Process.Pid)
		conn, err := l.bird.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if err := syscall.Kill(l.procs[n1.Name].cmd.Process.Pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Poll BIRD every 0.5 ms, bounded by the hold time, for the time
		// the withdrawal takes; then check which paths are left.
		for time.Since(start) < bgpHold {
			if n, err := conn.PathCount(prefix); err != nil || n <= 2 {
				break
			}
			time.Sleep(500 * time.Microsecond)
		}
		took := time.Since(start)
		l.waitVias(t, prefix, bgpHold, n2.IPv4.Addr().String(), n3.IPv4.Addr().String())
		select {
		case <-l.procs[n1.Name].done:
		case <-time.After(5 * time.Second):
			t.Fatalf("announcer on %s still running 5s after SIGTERM", n1.Name)
		}
		t.Logf("route of %s withdrawn %s after SIGTERM", n1.Name, took.Round(time.Millisecond))
		if !strings.Contains(l.procs[n1.Name].Output(), "BGP routes withdrawn and sessions closed") {
			t.Errorf("announcer did not stop its speaker gracefully:\n%s", l.procs[n1.Name].Output())
		}
		// Once the others stop hearing it (after the restart grace), they
		// delete its announcement: n2 and n3 remain.
		l.waitAnnouncers(t, 45*time.Second, "web", vip, v1alpha1.AnnouncementBGP, n2.Name, n3.Name)
		l.waitSessions(t, 20*time.Second, "router", "established", n2.Name, n3.Name)
		for _, pid := range speaker {
			if _, err := os.Stat("/proc/" + pid); err == nil {
				t.Errorf("BGP speaker %s outlived the announcer", pid)
			}
		}
	})

	t.Run("deleting the Service withdraws the route everywhere", func(t *testing.T) {
		if err := l.kube.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		l.waitVias(t, prefix, 10*time.Second)
		// The sessions stay up for the other Services.
		st, _ := l.bird.ProtocolStates()
		if st["n2"] != "Established" {
			t.Errorf("n2 session %q after a Service deletion, want Established", st["n2"])
		}
	})
}
