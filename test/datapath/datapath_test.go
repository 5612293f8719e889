package datapath

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/netlab"
)

func TestNodePodCIDRs(t *testing.T) {
	for _, c := range []struct {
		i      int
		v4, v6 string
	}{
		{1, "203.0.113.128/28", "2001:db8:1:0:1::/80"},
		{2, "203.0.113.144/28", "2001:db8:1:0:2::/80"},
		{MaxNodes, "203.0.113.240/28", "2001:db8:1:0:8::/80"},
	} {
		v4, v6, err := NodePodCIDRs(c.i)
		if err != nil || v4.String() != c.v4 || v6.String() != c.v6 {
			t.Errorf("NodePodCIDRs(%d) = %s, %s, %v; want %s, %s", c.i, v4, v6, err, c.v4, c.v6)
		}
		if !PodCIDR4.Contains(v4.Addr()) || !PodCIDR6.Contains(v6.Addr()) {
			t.Errorf("node %d's blocks %s %s outside the pod ranges", c.i, v4, v6)
		}
	}
	if _, _, err := NodePodCIDRs(MaxNodes + 1); err == nil {
		t.Errorf("NodePodCIDRs(%d): want an error, the ranges hold %d nodes", MaxNodes+1, MaxNodes)
	}
	v4, v6, _ := NodePodCIDRs(1)
	if g := nth(v4, 1).String(); g != "203.0.113.129" {
		t.Errorf("node 1 gateway %s", g)
	}
	if g := nth(v6, 14).String(); g != "2001:db8:1:0:1::e" {
		t.Errorf("node 1 pod 14 IPv6 %s", g)
	}
}

// TestDataPath is the smoke test of the lab's data path: a client's HTTP
// request to a LoadBalancer VIP goes through the real kube-proxy of the node
// that holds the VIP to a pod whose EndpointSlice the real
// kube-controller-manager built, in both kube-proxy modes this kernel runs.
func TestDataPath(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver, etcd, kube-controller-manager and kube-proxy in network namespaces")
	}
	netlab.RequirePrivileged(t)
	// kube-proxy runs iptables/ip6tables (iptables mode) and nft (nftables
	// mode); the control plane in a namespace is probed with curl.
	netlab.RequireTools(t, "curl", "iptables", "ip6tables", "iptables-save", "ip6tables-save", "nft")
	for _, mode := range []ProxyMode{IPTables, NFTables} {
		t.Run(string(mode), func(t *testing.T) { testDataPath(t, mode) })
	}
}

var (
	vip  = netlab.VIP4(0) // 192.0.2.200
	vip6 = netlab.VIP6(0) // 2001:db8:0:1::200
)

func testDataPath(t *testing.T, mode ProxyMode) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	host := hostState(t)

	lab := netlab.New(t, netlab.Options{Nodes: 2})
	ctl := lab.AddHost(t, "ctl", 5)
	cp := apiserver.StartT(t, apiserver.Options{Netns: ctl.Netns, BindAddress: ctl.IPv4.Addr().String()})
	cp.Config.Dial = ctl.DialContext // the test process reaches it from inside ctl's namespace
	if err := cp.StartControllerManager(ctx, apiserver.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	kube := cp.Client()
	dp := NewT(t, lab, Options{Client: kube, Kubeconfig: cp.Kubeconfig})
	nodes, err := dp.AddNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proxies, err := dp.StartKubeProxies(ctx, ProxyOptions{Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.StartKubeProxy(ctx, nodes[0].Name, ProxyOptions{Mode: mode}); err == nil {
		t.Error("a second kube-proxy started on node1")
	}
	pods := map[string]*Pod{}
	for i, nd := range nodes {
		name := fmt.Sprintf("web-%d", i+1)
		p, err := dp.AddPod(ctx, PodOptions{Name: name, Node: nd.Name, Labels: map[string]string{"app": "web"}})
		if err != nil {
			t.Fatal(err)
		}
		pods[name] = p
	}
	svc := createLBService(ctx, t, kube, "web", vip, vip6)
	waitSlice(ctx, t, kube, "web", pods)

	// Only node1 answers ARP and NDP for the VIPs in this test (no
	// announcer here).
	node1, node2 := nodes[0], nodes[1]
	bindVIP(t, node1.Host, vip)
	bindVIP(t, node1.Host, vip6)
	url := "http://" + vip.String() + "/"

	t.Run("Cluster reaches every pod, masqueraded by the VIP's node", func(t *testing.T) {
		for _, c := range []struct {
			vip         netip.Addr
			gw, nodeLab netip.Addr
		}{
			{vip, node1.Gateway4, node1.Host.IPv4.Addr()},
			{vip6, node1.Gateway6, node1.Host.IPv6.Addr()},
		} {
			url := "http://" + net.JoinHostPort(c.vip.String(), "80") + "/"
			seen := map[string]Answer{}
			eventually(ctx, t, 60*time.Second, "both pods answer through "+c.vip.String(), func() error {
				a, err := Get(ctx, lab.Client, url, 2*time.Second)
				if err != nil {
					return err
				}
				seen[a.Pod] = a
				if len(seen) < len(pods) {
					return fmt.Errorf("answers from %v so far", keys(seen))
				}
				return nil
			})
			// Under Cluster the node that took the packet masquerades it: to
			// its own pod from its gateway address on the veth, to another
			// node's pod from its lab address.
			if a := seen["web-1"]; a.Node != "node1" || a.From != c.gw.String() {
				t.Errorf("%s: web-1 answered %+v, want node=node1 from=%s", c.vip, a, c.gw)
			}
			if a := seen["web-2"]; a.Node != "node2" || a.From != c.nodeLab.String() {
				t.Errorf("%s: web-2 answered %+v, want node=node2 from=%s", c.vip, a, c.nodeLab)
			}
		}
	})

	t.Run("Local is answered only by the pod on the VIP's node", func(t *testing.T) {
		patch := []byte(`{"spec":{"externalTrafficPolicy":"Local"}}`)
		if _, err := kube.CoreV1().Services("default").Patch(ctx, svc.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		client := lab.Client.IPv4.Addr().String()
		onlyLocal(ctx, t, lab.Client, url, "web-1", client)

		moveVIP(ctx, t, lab.Client, node1.Host, node2.Host, vip)
		onlyLocal(ctx, t, lab.Client, url, "web-2", client)

		// No ready pod on the VIP's node: kube-proxy drops the traffic
		// rather than sending it to the other node.
		if err := pods["web-2"].SetReady(ctx, false); err != nil {
			t.Fatal(err)
		}
		eventually(ctx, t, 60*time.Second, "no answer while the local pod is not ready", func() error {
			for range 3 {
				if a, err := Get(ctx, lab.Client, url, time.Second); err == nil {
					return fmt.Errorf("answered by %+v", a)
				}
			}
			return nil
		})
		if err := pods["web-2"].SetReady(ctx, true); err != nil {
			t.Fatal(err)
		}
		onlyLocal(ctx, t, lab.Client, url, "web-2", client)
	})

	if mode == IPTables {
		t.Run("a node switched to nftables drops its iptables rules and still serves", func(t *testing.T) {
			proxies[0].Stop()
			p, err := dp.StartKubeProxy(ctx, node1.Name, ProxyOptions{Mode: NFTables})
			if err != nil {
				t.Fatal(err)
			}
			proxies[0] = p
			out, err := node1.Host.Run(ctx, "iptables-save", "-t", "nat")
			if err != nil || strings.Contains(out, "KUBE-SERVICES") {
				t.Errorf("node1's iptables rules after the switch (%v):\n%.2000s", err, out)
			}
			moveVIP(ctx, t, lab.Client, node2.Host, node1.Host, vip)
			onlyLocal(ctx, t, lab.Client, url, "web-1", lab.Client.IPv4.Addr().String())
		})
	}

	t.Run("kube-proxy ran only in the node namespaces", func(t *testing.T) {
		for _, p := range proxies {
			out, err := exec.Command("ip", "netns", "identify", fmt.Sprint(p.cmd.Process.Pid)).Output()
			if got := strings.TrimSpace(string(out)); err != nil || got != p.Node.Host.Netns {
				t.Errorf("kube-proxy of %s runs in namespace %q (%v), want %s", p.Node.Name, got, err, p.Node.Host.Netns)
			}
			// Positive control: the rules are in the node's namespace.
			var check []string
			if p.Mode == IPTables {
				check = []string{"iptables-save", "-t", "nat"}
			} else {
				check = []string{"nft", "list", "table", "ip", "kube-proxy"}
			}
			out, err = p.Node.Host.Command(ctx, check[0], check[1:]...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), vip.String()) {
				t.Errorf("%s in %s: no rule for %s (%v):\n%.2000s", strings.Join(check, " "), p.Node.Name, vip, err, out)
			}
		}
		if after := hostState(t); after != host {
			t.Errorf("the host's namespace changed while kube-proxy ran:\nbefore: %+v\nafter:  %+v", host, after)
		}
	})
}

// createLBService makes a dual-stack LoadBalancer Service selecting
// app=<name>, with ips in its status.
func createLBService(ctx context.Context, t *testing.T, kube kubernetes.Interface, name string, ips ...netip.Addr) *corev1.Service {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Selector:              map[string]string{"app": name},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
	s, err := kube.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What pvelb-ccm would write; it is not part of this test.
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
	}
	if s, err = kube.CoreV1().Services("default").UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitSlice waits until the endpointslice controller lists every pod, ready,
// with its node, in the Service's IPv4 slices.
func waitSlice(ctx context.Context, t *testing.T, kube kubernetes.Interface, svc string, pods map[string]*Pod) {
	t.Helper()
	eventually(ctx, t, 60*time.Second, "EndpointSlices of "+svc+" list every pod", func() error {
		list, err := kube.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, es := range list.Items {
			if es.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" || es.AddressType != discoveryv1.AddressTypeIPv4 {
				continue
			}
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready && ep.NodeName != nil {
					got[ep.Addresses[0]] = *ep.NodeName
				}
			}
		}
		for _, p := range pods {
			if got[p.IPv4.String()] != p.Node.Name {
				return fmt.Errorf("ready endpoints %v, missing %s on %s", got, p.IPv4, p.Node.Name)
			}
		}
		return nil
	})
}

// onlyLocal waits until ten answers in a row come from want, seen with the
// client's own address (Local keeps the source).
func onlyLocal(ctx context.Context, t *testing.T, client *netlab.Host, url, want, from string) {
	t.Helper()
	eventually(ctx, t, 60*time.Second, "only "+want+" answers, with the client's address", func() error {
		for range 10 {
			a, err := Get(ctx, client, url, 2*time.Second)
			if err != nil {
				return err
			}
			if a.Pod != want || a.From != from {
				return fmt.Errorf("answered by %+v", a)
			}
		}
		return nil
	})
}

// bindVIP makes h answer ARP or NDP for ip by holding it on its lab link:
// this test's stand-in for the announcer.
func bindVIP(t *testing.T, h *netlab.Host, ip netip.Addr) {
	t.Helper()
	cmd := "addr add " + netip.PrefixFrom(ip, ip.BitLen()).String() + " dev " + h.Link
	if ip.Is6() {
		// Deprecated at once (preferred_lft 0): it still answers NDP and
		// takes traffic, but the kernel never picks it as a source, so the
		// node masquerades from its own address as it would with an
		// announcer (which binds no VIP to the link).
		cmd += " nodad preferred_lft 0"
	}
	if _, err := runIP(h.Netns, cmd); err != nil {
		t.Fatal(err)
	}
}

func moveVIP(ctx context.Context, t *testing.T, client, from, to *netlab.Host, ip netip.Addr) {
	t.Helper()
	if _, err := runIP(from.Netns, "addr del "+ip.String()+"/32 dev "+from.Link); err != nil {
		t.Fatal(err)
	}
	bindVIP(t, to, ip)
	if err := client.FlushNeigh(ctx); err != nil {
		t.Fatal(err)
	}
}

// hostFacts is what kube-proxy would change if it ran in the host's
// namespace: its chains and tables, and the sysctls it writes.
type hostFacts struct {
	KubeChains4, KubeChains6 int
	NFTTables                string
	Sysctls                  string
}

func hostState(t *testing.T) hostFacts {
	t.Helper()
	count := func(name string) int {
		out, err := exec.Command(name).Output()
		if err != nil {
			t.Fatalf("%s on the host: %v", name, err)
		}
		return strings.Count(string(out), "KUBE-")
	}
	var f hostFacts
	f.KubeChains4, f.KubeChains6 = count("iptables-save"), count("ip6tables-save")
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		t.Fatalf("nft list tables on the host: %v", err)
	}
	f.NFTTables = strings.Join(strings.Fields(string(out)), " ")
	out, err = exec.Command("sysctl", "net.netfilter.nf_conntrack_max",
		"net.netfilter.nf_conntrack_tcp_timeout_established", "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
		"net.ipv4.conf.all.route_localnet", "net.ipv4.ip_forward").Output()
	if err != nil {
		t.Fatalf("sysctl on the host: %v", err)
	}
	hash, err := exec.Command("cat", "/sys/module/nf_conntrack/parameters/hashsize").Output()
	if err != nil {
		t.Fatalf("conntrack hashsize: %v", err)
	}
	f.Sysctls = strings.Join(strings.Fields(string(out)), " ") + " hashsize=" + strings.TrimSpace(string(hash))
	return f
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// eventually retries fn every 200 ms until it succeeds, failing the test
// with fn's last error after timeout.
func eventually(ctx context.Context, t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	if err := waitFor(ctx, timeout, fn); err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, err)
	}
}
