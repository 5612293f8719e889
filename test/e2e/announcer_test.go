package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/announcer"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/netlab"
)

const (
	annSecret     = "e2e-membership-secret-0123456789"
	annMetricPort = 7948
)

// annLab is a network lab with a real apiserver on the lab network, Node
// objects for its nodes, an ARP-mode IPPool and one announcer per node.
type annLab struct {
	net    *netlab.Lab
	cp     *apiserver.ControlPlane
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	bin    string
	secret string
	procs  map[string]*Process // by node name
	// top is the test that owns the lab: announcers restarted inside a
	// subtest must outlive it.
	top testing.TB
}

func newAnnLab(t testing.TB) *annLab {
	t.Helper()
	return newAnnLabN(t, 3)
}

// newAnnLabN is newAnnLab with n nodes (netlab gives nodes octets 11..60,
// so at most 50), for figures that depend on the cluster's size.
func newAnnLabN(t testing.TB, n int) *annLab {
	t.Helper()
	netlab.RequireTools(t, "ping")
	lab := netlab.New(t, netlab.Options{Nodes: n, StrictARP: true})
	// The control plane sits on the lab network: processes in node
	// namespaces cannot reach the host's loopback.
	ctl := lab.AddHost(t, "ctl", 5)
	cp := apiserver.StartT(t, apiserver.Options{Netns: ctl.Netns, BindAddress: ctl.IPv4.Addr().String()})
	cp.Config.Dial = ctl.DialContext // the test process reaches it from inside ctl's namespace
	ApplyCRDs(t, cp)
	l := &annLab{
		net: lab, cp: cp, kube: cp.Client(), dyn: dynamic.NewForConfigOrDie(cp.Config),
		bin: announcerBinary(t), procs: map[string]*Process{}, top: t,
	}
	l.secret = filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(l.secret, []byte(annSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, h := range lab.Nodes {
		l.addNodeObject(t, h, fmt.Sprintf("pve%d", i+1))
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": "main"},
		"spec": map[string]any{
			"addresses": []any{netlab.VIP4(0).String() + "-" + netlab.VIP4(20).String(), netlab.VIP6(0).String() + "-" + netlab.VIP6(20).String()},
			"announce":  map[string]any{"mode": "arp"},
		},
	}}
	if _, err := l.dyn.Resource(ippoolGVR).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return l
}

// start runs an announcer in the node's namespace until the lab's test ends.
func (l *annLab) start(t testing.TB, node *netlab.Host, secretFile string, extraArgs ...string) *Process {
	t.Helper()
	args := []string{"netns", "exec", node.Netns, l.bin,
		"--kubeconfig=" + l.cp.Kubeconfig,
		"--node-name=" + node.Name,
		"--membership-secret-file=" + secretFile,
		"--metrics-bind-address=" + net.JoinHostPort(node.IPv4.Addr().String(), strconv.Itoa(annMetricPort)),
		// Short, so that a quiet interval a little longer than it sees a
		// full pass (annResync).
		"--resync-period=" + annResync.String(),
		"--v=2",
	}
	p := Start(l.top, "ip", append(args, extraArgs...)...)
	l.procs[node.Name] = p
	return p
}

// service creates a LoadBalancer Service with the given VIPs in its status
// and pvelb's allocated-pool annotation, as pvelb-ccm leaves it (the
// allocation itself is tested with pvelb-ccm elsewhere).
func (l *annLab) service(t testing.TB, name string, local bool, ips ...netip.Addr) *corev1.Service {
	t.Helper()
	return l.serviceInPool(t, "main", name, local, ips...)
}

// serviceInPool is service with addresses from the named pool.
func (l *annLab) serviceInPool(t testing.TB, pool, name string, local bool, ips ...netip.Addr) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{"pvelb.io/allocated-pool": pool}},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	s, err := l.kube.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: ptr(corev1.LoadBalancerIPModeVIP)})
		// kube-proxy (IPVS) binds every LoadBalancer IP on every node.
		for _, n := range l.net.Nodes {
			if err := n.AddVIP(ip); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s, err = l.kube.CoreV1().Services("default").UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// answering returns the lab node whose MAC answered ARP (or NDP) for ip,
// failing unless exactly one node answers within timeout.
func (l *annLab) answering(t testing.TB, ip netip.Addr, timeout time.Duration) *netlab.Host {
	t.Helper()
	var got *netlab.Host
	Eventually(t, timeout, "exactly one node answers for "+ip.String(), func(ctx context.Context) error {
		var macs []net.HardwareAddr
		var err error
		if ip.Is4() {
			macs, err = l.net.Client.Arping(ctx, ip, 3, 100*time.Millisecond)
		} else {
			macs, err = l.net.Client.Solicit(ctx, ip, 3, 100*time.Millisecond)
		}
		if err != nil {
			return err
		}
		if len(macs) != 1 {
			return fmt.Errorf("answers from %v", macs)
		}
		for _, n := range l.net.Nodes {
			if n.MAC.String() == macs[0].String() {
				got = n
				return nil
			}
		}
		return fmt.Errorf("answer from unknown MAC %s", macs[0])
	})
	return got
}

func (l *annLab) waitAnnouncingEvent(t testing.TB, svc, node string, ip netip.Addr) {
	t.Helper()
	Eventually(t, 20*time.Second, "Announcing event for "+node, func(ctx context.Context) error {
		evs, err := l.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + svc})
		if err != nil {
			return err
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == "Announcing" && strings.Contains(e.Message, "Node "+node+" ") && strings.Contains(e.Message, ip.String()) {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return fmt.Errorf("events %v", seen)
	})
}

// pingLoss pings ip from the client every 10 ms for d and returns how many
// echo requests got no reply.
func (l *annLab) pingLoss(ctx context.Context, ip netip.Addr, d time.Duration) (sent, lost int, err error) {
	count := int(d / (10 * time.Millisecond))
	out, err := l.net.Client.Command(ctx, "ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", strconv.Itoa(count), ip.String()).CombinedOutput()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(string(out))
	if m == nil {
		return 0, 0, fmt.Errorf("ping output %q: %v", out, err)
	}
	tx, _ := strconv.Atoi(m[1])
	rx, _ := strconv.Atoi(m[2])
	return tx, tx - rx, nil
}

func (l *annLab) metric(t testing.TB, node *netlab.Host, name string) float64 {
	t.Helper()
	v, err := l.scrape(node, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// scrape reads one sample (name with its labels, as exposed) of a node's
// announcer metrics.
func (l *annLab) scrape(node *netlab.Host, name string) (float64, error) {
	resp, err := l.get(node, "/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics of %s: %w", node.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not exposed by %s", name, node.Name)
}

// get fetches path from a node's announcer HTTP endpoint, from the client
// namespace.
func (l *annLab) get(node *netlab.Host, path string) (*http.Response, error) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: l.net.Client.DialContext}}
	return hc.Get("http://" + net.JoinHostPort(node.IPv4.Addr().String(), strconv.Itoa(annMetricPort)) + path)
}

// status reads a node's announcer /status.
func (l *annLab) status(node *netlab.Host) (announcer.Status, error) {
	var st announcer.Status
	resp, err := l.get(node, "/status")
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", node.Name, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("status of %s: %w", node.Name, err)
	}
	return st, nil
}

func TestAnnouncerL2(t *testing.T) {
	l := newAnnLab(t)
	for _, n := range l.net.Nodes {
		l.start(t, n, l.secret)
	}
	ctx := context.Background()
	vip, vip6 := netlab.VIP4(1), netlab.VIP6(1)
	l.service(t, "web", false, vip, vip6)

	var winner *netlab.Host
	t.Run("exactly one node answers and the client reaches it", func(t *testing.T) {
		winner = l.answering(t, vip, 30*time.Second)
		if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
			t.Fatalf("ping %s: %v", vip, err)
		}
		nb, err := l.net.Client.Neigh(ctx, vip)
		if err != nil || nb.MAC.String() != winner.MAC.String() {
			t.Fatalf("client neighbour entry %+v (%v), want %s of %s", nb, err, winner.MAC, winner.Name)
		}
		w6 := l.answering(t, vip6, 10*time.Second)
		if err := l.net.Client.Ping(ctx, vip6, 2*time.Second); err != nil {
			t.Fatalf("ping %s: %v", vip6, err)
		}
		t.Logf("%s answered by %s, %s by %s", vip, winner.Name, vip6, w6.Name)
		l.waitAnnouncingEvent(t, "web", winner.Name, vip)
		if v := l.metric(t, winner, "pvelb_announcer_membership_peers_alive"); v != 2 {
			t.Errorf("%s sees %v live peers, want 2", winner.Name, v)
		}
		// Who answers, lasting and in `kubectl get`.
		ann := l.waitAnnouncedBy(t, "web", winner.Name, vip)
		l.waitAnnouncedBy(t, "web", w6.Name, vip6)
		l.checkAnnouncementTable(t, ann)
		if v := l.metric(t, winner, fmt.Sprintf(`pvelb_announcer_vip_announced{mode="L2",namespace="default",node=%q,service="web",vip=%q}`, winner.Name, vip)); v != 1 {
			t.Errorf("pvelb_announcer_vip_announced for %s on %s = %v, want 1", vip, winner.Name, v)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("announcements are written on change only", func(t *testing.T) {
		// Longer than the announcers' 30 s resync.
		if n := l.countAnnouncementWrites(t, annResync+3*time.Second); n != 0 {
			t.Errorf("%d ServiceAnnouncement writes in a quiet cluster, want 0", n)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("SIGKILL of the winner's announcer moves the VIP", func(t *testing.T) {
		old := winner
		if err := syscall.Kill(-l.procs[old.Name].cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		Eventually(t, 5*time.Second, "successor answers", func(ctx context.Context) error {
			macs, err := l.net.Client.Arping(ctx, vip, 1, 50*time.Millisecond)
			if err != nil {
				return err
			}
			if len(macs) != 1 || macs[0].String() == old.MAC.String() {
				return fmt.Errorf("answers %v", macs)
			}
			return nil
		})
		t.Logf("successor answered %s after SIGKILL", time.Since(start).Round(time.Millisecond))
		winner = l.answering(t, vip, 5*time.Second)
		if winner == old {
			t.Fatalf("%s still answers", old.Name)
		}
		if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
			t.Fatalf("ping after failover: %v", err)
		}
		l.waitAnnouncingEvent(t, "web", winner.Name, vip)
		// The successor's announcement replaces the dead node's.
		l.waitAnnouncedBy(t, "web", winner.Name, vip)
		// Bring the killed announcer back for the next steps.
		l.start(t, old, l.secret)
		Eventually(t, 10*time.Second, old.Name+" rejoins", func(context.Context) error {
			if v := l.metric(t, winner, "pvelb_announcer_membership_peers_alive"); v != 2 {
				return fmt.Errorf("%v peers alive", v)
			}
			return nil
		})
		winner = l.answering(t, vip, 5*time.Second)
	})
	if t.Failed() {
		return
	}

	t.Run("cutting the winner's link moves the VIP", func(t *testing.T) {
		old := winner
		if err := old.CutLink(); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 5*time.Second, "successor answers", func(ctx context.Context) error {
			macs, err := l.net.Client.Arping(ctx, vip, 2, 100*time.Millisecond)
			if err != nil {
				return err
			}
			if len(macs) != 1 || macs[0].String() == old.MAC.String() {
				return fmt.Errorf("answers %v", macs)
			}
			return nil
		})
		if err := l.net.Client.Ping(ctx, vip, 2*time.Second); err != nil {
			t.Fatalf("ping after link cut: %v", err)
		}
		if err := old.RestoreLink(); err != nil {
			t.Fatal(err)
		}
		// After the partition heals, views converge: again exactly one answers.
		winner = l.answering(t, vip, 10*time.Second)
	})
	if t.Failed() {
		return
	}

	t.Run("SIGTERM of a cordoned node hands over without loss", func(t *testing.T) {
		old := winner
		l.cordon(t, old.Name, true)
		type result struct {
			sent, lost int
			err        error
		}
		done := make(chan result, 1)
		go func() {
			s, lo, err := l.pingLoss(ctx, vip, 3*time.Second)
			done <- result{s, lo, err}
		}()
		time.Sleep(time.Second)
		if err := syscall.Kill(-l.procs[old.Name].cmd.Process.Pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Logf("SIGTERM handover: %d of %d pings lost", r.lost, r.sent)
		if r.lost > 10 {
			t.Errorf("%d pings (10 ms apart) lost during SIGTERM handover, want <= 10 (100 ms)", r.lost)
		}
		winner = l.answering(t, vip, 5*time.Second)
		if winner == old {
			t.Fatalf("%s still answers after SIGTERM", old.Name)
		}
		select {
		case <-l.procs[old.Name].done:
		case <-time.After(5 * time.Second):
			t.Fatalf("announcer on %s still running 5s after SIGTERM", old.Name)
		}
		l.cordon(t, old.Name, false)
		l.start(t, old, l.secret)
	})
	if t.Failed() {
		return
	}

	t.Run("Local services follow their endpoints", func(t *testing.T) {
		lip := netlab.VIP4(2)
		l.service(t, "local", true, lip)
		// No ready endpoint: nobody answers.
		time.Sleep(time.Second)
		if macs, _ := l.net.Client.Arping(ctx, lip, 3, 100*time.Millisecond); len(macs) != 0 {
			t.Fatalf("Local service without endpoints answered by %v", macs)
		}
		target := l.net.Nodes[2]
		l.endpointSlice(t, "local", target.Name)
		if got := l.answering(t, lip, 10*time.Second); got != target {
			t.Fatalf("Local service answered by %s, want %s (its only endpoint)", got.Name, target.Name)
		}
		target = l.net.Nodes[0]
		l.endpointSlice(t, "local", target.Name)
		Eventually(t, 10*time.Second, "follows the endpoint to "+target.Name, func(ctx context.Context) error {
			macs, err := l.net.Client.Arping(ctx, lip, 2, 100*time.Millisecond)
			if err != nil {
				return err
			}
			if len(macs) != 1 || macs[0].String() != target.MAC.String() {
				return fmt.Errorf("answers %v", macs)
			}
			return nil
		})
	})

	t.Run("a wrong secret cannot join", func(t *testing.T) {
		n := l.net.Nodes[1]
		bad := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(bad, []byte("not-the-cluster-secret-at-all"), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(-l.procs[n.Name].cmd.Process.Pid, syscall.SIGTERM)
		<-l.procs[n.Name].done
		l.start(t, n, bad)
		other := l.net.Nodes[0]
		Eventually(t, 10*time.Second, "the impostor is refused", func(context.Context) error {
			if v := l.metric(t, other, `pvelb_announcer_membership_messages_received_total{result="bad_auth"}`); v < 5 {
				return fmt.Errorf("bad_auth %v", v)
			}
			return nil
		})
		if v := l.metric(t, other, "pvelb_announcer_membership_peers_alive"); v != 1 {
			t.Fatalf("%s sees %v live peers with %s on a wrong secret, want 1", other.Name, v, n.Name)
		}
	})
}

// endpointSlice makes nodeName the only ready endpoint of the Service.
func (l *annLab) endpointSlice(t testing.TB, svc, nodeName string) {
	t.Helper()
	ctx := context.Background()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: svc + "-e2e", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"198.51.100.77"},
			NodeName:   &nodeName,
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		}},
	}
	cur, err := l.kube.DiscoveryV1().EndpointSlices("default").Get(ctx, es.Name, metav1.GetOptions{})
	if err == nil {
		cur.Endpoints = es.Endpoints
		_, err = l.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, cur, metav1.UpdateOptions{})
	} else {
		_, err = l.kube.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// announcerBinary is pvelb-announcer with pvelb-bgp-speaker, which it
// starts for BGP, beside it.
func announcerBinary(t testing.TB) string {
	t.Helper()
	bin, speaker := Binary(t, "pvelb-announcer"), Binary(t, "pvelb-bgp-speaker")
	if filepath.Dir(bin) != filepath.Dir(speaker) {
		t.Fatalf("%s and %s must be in the same directory (PVELB_BIN_DIR holds only one of them?)", bin, speaker)
	}
	return bin
}
