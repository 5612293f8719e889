package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
	"github.com/pvelb/pvelb/test/pvesim"
)

// trafficOpts shape a trafficLab.
type trafficOpts struct {
	// Proxy is kube-proxy's mode; iptables when empty.
	Proxy datapath.ProxyMode
	// Variant is the emulated Proxmox firewall; pve-firewall when zero.
	Variant pvefw.Variant
	// FWPeriod is how often the emulated firewall re-applies Proxmox's
	// state: 200 ms when zero (tests should not wait for the daemons' 10 s
	// loop), the variant's real period when negative (benchmarks).
	FWPeriod time.Duration
	// FirewallOff writes `firewall.enabled: false` into pvelb's cloud
	// config: pvelb admits nothing, as a cluster without the feature.
	FirewallOff bool
	// AdmitRanges writes `firewall.admitRanges: true`.
	AdmitRanges bool
	// Pods lists, per node (index into the lab's nodes), how many backend
	// pods labelled app=web run there; one on every node when nil.
	Pods []int
	// Peer runs another LoadBalancer implementation in pvelb's place
	// (peers_lab_test.go): no pvelb-ccm, IPPool or pvelb announcer; the
	// peer starts after the pods. pvelb when nil.
	Peer lbImpl
	// IPFilterOff turns every VM's Proxmox firewall off, so an
	// implementation that does not admit its VIPs can be measured at all.
	IPFilterOff bool
}

// trafficLab is the lab where requests go the way they do in a user's
// cluster on Proxmox: a client on the bridge (vmbr0) sends HTTP to a VIP,
// the Proxmox firewall (pvefw, from the simulator's IPSets) filters every
// node VM's port, the announcer elected by pvelb answers ARP/NDP, the real
// kube-proxy of that node forwards to a pod found by the real
// kube-controller-manager, and pvelb-ccm (firewall management on) admits
// the VIP in Proxmox. Nothing of pvelb is stubbed.
type trafficLab struct {
	opts   trafficOpts
	net    *netlab.Lab
	ctl    *netlab.Host
	cp     *apiserver.ControlPlane
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	sim    *pvesim.Server
	fw     *pvefw.Firewall
	dp     *datapath.Network
	nodes  []*datapath.Node
	pods   []*datapath.Pod
	ccm    *Process
	ann    map[string]*Process
	vmid   map[string]int // node name -> VM id
	dir    string
	simURL string
	simCA  string
	token  string // token secret file
	member string // membership secret file
	// top owns processes restarted inside subtests, which must outlive them.
	top testing.TB
}

const (
	tlPVEPort   = 8006
	tlCCMPort   = 10258
	tlTokenID   = "pvelb@pve!ccm"
	tlPool      = "main"
	tlAppLabel  = "web"
	tlRegion    = "lab"
	tlFWPeriod  = 200 * time.Millisecond
	tlMemberUDP = 7947 // announcer membership, the port a VM firewall can cut
)

// tlPVEHosts places the node VMs on two Proxmox hosts, as in the demo.
var tlPVEHosts = []string{"pve1", "pve1", "pve2"}

func newTrafficLab(t testing.TB, opts trafficOpts) *trafficLab {
	t.Helper()
	if testing.Short() {
		t.Skip("traffic lab: apiserver, kube-controller-manager, kube-proxy, pvelb-ccm, announcers and the Proxmox firewall in network namespaces")
	}
	netlab.RequireTools(t, "nft", "ping", "iptables", "ip6tables", "iptables-save", "ip6tables-save")
	if opts.Proxy == "" {
		opts.Proxy = datapath.IPTables
	}
	if opts.Variant == 0 {
		opts.Variant = pvefw.Classic
	}
	if opts.FWPeriod == 0 {
		opts.FWPeriod = tlFWPeriod
	} else if opts.FWPeriod < 0 {
		opts.FWPeriod = opts.Variant.DefaultPeriod()
	}
	if opts.Pods == nil {
		opts.Pods = []int{1, 1, 1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// No StrictARP: kube-proxy in iptables or nftables mode binds no VIP,
	// so only an announcer ever answers for one.
	lab := netlab.New(t, netlab.Options{Nodes: len(tlPVEHosts)})
	ctl := lab.AddHost(t, "ctl", 5)
	cp := apiserver.StartT(t, apiserver.Options{Netns: ctl.Netns, BindAddress: ctl.IPv4.Addr().String()})
	cp.Config.Dial = ctl.DialContext
	ApplyCRDs(t, cp)
	if err := cp.StartControllerManager(ctx, apiserver.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	l := &trafficLab{
		opts: opts, net: lab, ctl: ctl, cp: cp, kube: cp.Client(), dyn: dynamic.NewForConfigOrDie(cp.Config),
		ann: map[string]*Process{}, vmid: map[string]int{}, dir: t.TempDir(), top: t,
	}
	l.startProxmox(t)
	l.fw = pvefw.Start(t, lab, l.sim, pvefw.Options{Variant: opts.Variant, Period: opts.FWPeriod, Logf: t.Logf})

	// Nodes as kubelets with --cloud-provider=external register them, then
	// the pod network (podCIDRs, routes), then pvelb-ccm initialises them.
	// A peer runs with kubelets without a cloud provider: the pod network
	// registers the Nodes, initialised.
	for i, h := range lab.Nodes {
		if opts.Peer == nil {
			l.registerNode(t, h, i)
		}
	}
	l.dp = datapath.NewT(t, lab, datapath.Options{Client: l.kube, Kubeconfig: cp.Kubeconfig})
	nodes, err := l.dp.AddNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.nodes = nodes
	if opts.Peer == nil {
		l.createPool(t)
		l.startCCM(t, l.cloudConfig(t, opts.FirewallOff))
		l.waitNodesReady(t)
	}

	if _, err := l.dp.StartKubeProxies(ctx, datapath.ProxyOptions{Mode: opts.Proxy}); err != nil {
		t.Fatal(err)
	}
	if opts.Peer == nil {
		l.member = filepath.Join(l.dir, "membership-secret")
		if err := os.WriteFile(l.member, []byte(annSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, h := range lab.Nodes {
			l.startAnnouncer(h)
		}
	}
	for i, n := range nodes {
		for j := range opts.Pods[i] {
			l.addPod(t, fmt.Sprintf("web-%s-%d", n.Name, j+1), n.Name, map[string]string{"app": tlAppLabel})
		}
	}
	if opts.Peer != nil {
		opts.Peer.setup(t, l)
		return l
	}
	for _, h := range lab.Nodes {
		l.waitAnnouncerReady(t, h)
	}
	return l
}

// startProxmox serves the simulator over TLS inside ctl's namespace, where
// pvelb-ccm runs, with one VM per lab node. Each VM's NIC has its node's
// MAC (pvefw finds the bridge port by it), the VM firewall and IP filter
// are on, and ipfilter-net0 holds what a careful user running host-gateway
// pods admits: the node's own addresses and its pod ranges (pods' replies
// leave the VM with their own source under the host-gateway CNI). The
// datacenter firewall is on, without which no VM rule applies.
func (l *trafficLab) startProxmox(t testing.TB) {
	t.Helper()
	schema, err := pvesim.DefaultSchemaFile()
	if err != nil {
		t.Fatalf("Proxmox API schema (PVELB_PVE_API_DIR): %v", err)
	}
	secret := "5e1f1c8e-7d7a-4b4e-9f3b-0c2d4e6f8a10"
	sim, err := pvesim.New(pvesim.Options{SchemaFile: schema, Tokens: []pvesim.Token{{ID: tlTokenID, Secret: secret}}})
	if err != nil {
		t.Fatal(err)
	}
	l.sim = sim
	for i, h := range l.net.Nodes {
		vmid := 101 + i
		l.vmid[h.Name] = vmid
		if err := sim.AddVM(pvesim.VM{
			VMID: vmid, Node: tlPVEHosts[i], Name: h.Name, UUID: tlUUID(vmid),
			Cores: 2, Sockets: 1, MemoryMiB: 4096,
			Nets: map[int]string{0: "virtio=" + strings.ToUpper(h.MAC.String()) + ",bridge=vmbr0,firewall=1"},
		}); err != nil {
			t.Fatal(err)
		}
		sim.SetFirewallOptions(vmid, !l.opts.IPFilterOff, !l.opts.IPFilterOff)
		p4, p6, err := datapath.NodePodCIDRs(i + 1)
		if err != nil {
			t.Fatal(err)
		}
		sim.SeedIPSet(l.vmScope(h.Name), vmSet,
			pve.IPSetEntry{CIDR: h.IPv4.Addr().String(), Comment: "node address"},
			pve.IPSetEntry{CIDR: h.IPv6.Addr().String(), Comment: "node address"},
			pve.IPSetEntry{CIDR: p4.String(), Comment: "pods (host-gw)"},
			pve.IPSetEntry{CIDR: p6.String(), Comment: "pods (host-gw)"},
		)
	}
	sim.SetClusterFirewall(true)

	ip := l.ctl.IPv4.Addr().String()
	cert, caPEM, err := pvesim.SelfSignedTLS(ip)
	if err != nil {
		t.Fatal(err)
	}
	l.simCA = filepath.Join(l.dir, "pve-ca.pem")
	if err := os.WriteFile(l.simCA, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := netlab.InNetns(l.ctl.Netns, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(tlPVEPort)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only: the simulator's custom reason phrases need it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	l.simURL = "https://" + net.JoinHostPort(ip, strconv.Itoa(tlPVEPort)) + "/api2/json"
	l.token = filepath.Join(l.dir, "pve-token")
	if err := os.WriteFile(l.token, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tlUUID(vmid int) string { return fmt.Sprintf("7c1e2a90-5b6d-4f3e-8a21-000000000%03d", vmid) }

func (l *trafficLab) vmScope(node string) pve.Scope {
	i := l.vmid[node] - 101
	return pve.VMScope(pve.VMRef{Node: tlPVEHosts[i], VMID: l.vmid[node]})
}

// cloudConfig writes a cloud config and returns its path. The resync is
// short so a restarted pvelb-ccm's first pass is the one that counts.
func (l *trafficLab) cloudConfig(t testing.TB, off bool) string {
	t.Helper()
	cfg := fmt.Sprintf(`clusters:
  - region: %s
    url: %s
    tokenID: %q
    tokenSecretFile: %s
    caFile: %s
    timeout: 3s
instances:
  cacheTTL: 1s
firewall:
  enabled: %t
  nics: [net0]
  admitRanges: %t
  resyncPeriod: 30s
`, tlRegion, l.simURL, tlTokenID, l.token, l.simCA, !off, l.opts.AdmitRanges)
	path := filepath.Join(l.dir, fmt.Sprintf("cloud-config-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startCCM runs pvelb-ccm in ctl's namespace (where the apiserver and the
// Proxmox API are) and waits for its healthz.
func (l *trafficLab) startCCM(t testing.TB, cloudConfig string) {
	t.Helper()
	kc := l.cp.Kubeconfig
	bind := l.ctl.IPv4.Addr().String()
	p := Start(l.top, "ip", "netns", "exec", l.ctl.Netns, Binary(t, "pvelb-ccm"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--cloud-provider=proxmox", "--cloud-config="+cloudConfig,
		"--bind-address="+bind, "--secure-port="+strconv.Itoa(tlCCMPort),
		"--cert-dir="+filepath.Join(l.dir, "ccm-certs"),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
		"--node-monitor-period=1s", "--leader-elect=false", "--v=2")
	l.ccm = p
	waitHealthz(t, p, l.ctl.DialContext, "https://"+net.JoinHostPort(bind, strconv.Itoa(tlCCMPort))+"/healthz", 60*time.Second)
}

// restartCCM replaces pvelb-ccm with one reading a new cloud config, as a
// user editing the Secret and rolling the Deployment does.
func (l *trafficLab) restartCCM(t testing.TB, firewallOff bool) {
	t.Helper()
	l.ccm.Stop()
	l.startCCM(t, l.cloudConfig(t, firewallOff))
}

// registerNode creates the Node as a dual-stack kubelet with
// --cloud-provider=external does (uninitialized taint, both node IPs
// provided, the VM's SMBIOS UUID), Ready since no kubelet heartbeats here.
func (l *trafficLab) registerNode(t testing.TB, h *netlab.Host, i int) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        h.Name,
			Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": h.IPv4.Addr().String() + "," + h.IPv6.Addr().String()},
			Labels:      map[string]string{corev1.LabelHostname: h.Name, corev1.LabelOSStable: "linux"},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
	}
	created, err := l.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		NodeInfo: corev1.NodeSystemInfo{SystemUUID: tlUUID(101 + i), OperatingSystem: "linux", Architecture: "amd64"},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "traffic lab", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := l.kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitNodesReady waits until pvelb-ccm has initialised every Node and says
// what its VM admits: without pvelb.io/admitted no announcer elects it.
func (l *trafficLab) waitNodesReady(t testing.TB) {
	t.Helper()
	Eventually(t, 60*time.Second, "Nodes initialised and annotated by pvelb-ccm", func(ctx context.Context) error {
		if l.ccm.Exited() {
			t.Fatalf("pvelb-ccm exited:\n%s", l.ccm.Output())
		}
		list, err := l.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, n := range list.Items {
			if n.Spec.ProviderID == "" || hasTaint(&n, uninitializedTaint) {
				return errorf("%s: providerID %q, taints %v", n.Name, n.Spec.ProviderID, n.Spec.Taints)
			}
			if _, ok := n.Annotations[names.AnnotationAdmitted]; !ok {
				return errorf("%s has no %s yet", n.Name, names.AnnotationAdmitted)
			}
		}
		return nil
	})
}

func (l *trafficLab) createPool(t testing.TB) {
	t.Helper()
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": tlPool},
		"spec": map[string]any{
			"addresses": []any{netlab.VIP4(0).String() + "-" + netlab.VIP4(20).String(), netlab.VIP6(0).String() + "-" + netlab.VIP6(20).String()},
			"announce":  map[string]any{"mode": "arp"},
		},
	}}
	if _, err := l.dyn.Resource(ippoolGVR).Create(context.Background(), pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (l *trafficLab) startAnnouncer(h *netlab.Host) *Process {
	p := Start(l.top, "ip", "netns", "exec", h.Netns, announcerBinary(l.top),
		"--kubeconfig="+l.cp.AnnouncerKubeconfig, // its requests told apart (peers_load_test.go)
		"--node-name="+h.Name,
		"--membership-secret-file="+l.member,
		"--metrics-bind-address="+net.JoinHostPort(h.IPv4.Addr().String(), strconv.Itoa(annMetricPort)),
		"--v=2")
	l.ann[h.Name] = p
	return p
}

func (l *trafficLab) waitAnnouncerReady(t testing.TB, h *netlab.Host) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: l.net.Client.DialContext, DisableKeepAlives: true}}
	url := "http://" + net.JoinHostPort(h.IPv4.Addr().String(), strconv.Itoa(annMetricPort)) + "/readyz"
	Eventually(t, 30*time.Second, "announcer on "+h.Name+" ready", func(ctx context.Context) error {
		if l.ann[h.Name].Exited() {
			t.Fatalf("announcer on %s exited:\n%s", h.Name, l.ann[h.Name].Output())
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

func (l *trafficLab) addPod(t testing.TB, name, node string, labels map[string]string) *datapath.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := l.dp.AddPod(ctx, datapath.PodOptions{Name: name, Node: node, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	l.pods = append(l.pods, p)
	return p
}

// tlSvc shapes a Service before it is created.
type tlSvc func(*corev1.Service)

func tlLocal(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func tlDualStack(s *corev1.Service) {
	p := corev1.IPFamilyPolicyRequireDualStack
	s.Spec.IPFamilyPolicy = &p
	s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
}

func tlPort(p int32) tlSvc {
	return func(s *corev1.Service) { s.Spec.Ports[0].Port = p }
}

func tlAnnotate(k, v string) tlSvc {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

// service creates a LoadBalancer Service for the app=web pods, port 80 to
// their "http" port, and returns it as created (no address yet).
func (l *trafficLab) service(t testing.TB, name string, opts ...tlSvc) *corev1.Service {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": tlAppLabel},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	s, err := l.kube.CoreV1().Services("default").Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Service %s: %v", name, err)
	}
	return s
}

// vips waits until the Service has n addresses and returns them.
func (l *trafficLab) vips(t testing.TB, name string, n int) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	Eventually(t, 30*time.Second, "addresses of "+name, func(ctx context.Context) error {
		s, err := l.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, in := range s.Status.LoadBalancer.Ingress {
			out = append(out, netip.MustParseAddr(in.IP))
		}
		if len(out) != n {
			return errorf("%s has %v, want %d addresses", name, out, n)
		}
		return nil
	})
	return out
}

// url is http://vip:port/.
func tlURL(vip netip.Addr, port int) string {
	return "http://" + net.JoinHostPort(vip.String(), strconv.Itoa(port)) + "/"
}

// get sends one request through the VIP from the client, on a new
// connection.
func (l *trafficLab) get(ctx context.Context, url string, timeout time.Duration) (datapath.Answer, error) {
	return datapath.Get(ctx, l.net.Client, url, timeout)
}

// waitHTTP waits until a request through url is answered by a pod.
func (l *trafficLab) waitHTTP(t testing.TB, url string, timeout time.Duration) datapath.Answer {
	t.Helper()
	var a datapath.Answer
	Eventually(t, timeout, "an answer from "+url, func(ctx context.Context) error {
		var err error
		a, err = l.get(ctx, url, time.Second)
		return err
	})
	return a
}

// scrape reads one unlabelled sample of a node's announcer metrics, from the
// client (node addresses are always reachable).
func (l *trafficLab) scrape(node *netlab.Host, name string) (float64, error) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: l.net.Client.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + net.JoinHostPort(node.IPv4.Addr().String(), strconv.Itoa(annMetricPort)) + "/metrics")
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not exposed by %s", name, node.Name)
}

// announcing waits until exactly one announcer says it answers for want
// addresses and returns its node. It reads the announcers, not the wire:
// with the VIP dropped by the Proxmox firewall nothing on the wire tells.
func (l *trafficLab) announcing(t testing.TB, want int, timeout time.Duration) *netlab.Host {
	t.Helper()
	var got *netlab.Host
	Eventually(t, timeout, "one announcer answers", func(ctx context.Context) error {
		got = nil
		for _, n := range l.net.Nodes {
			v, err := l.scrape(n, "pvelb_announcer_announced_ips")
			if err != nil {
				return err
			}
			if int(v) == want {
				if got != nil {
					return errorf("%s and %s both announce %d addresses", got.Name, n.Name, want)
				}
				got = n
			}
		}
		if got == nil {
			return errorf("no announcer announces %d addresses", want)
		}
		return nil
	})
	return got
}

// owner returns the lab node whose MAC the client's ARP or NDP request for
// vip gets back, failing unless exactly one answers.
func (l *trafficLab) owner(t testing.TB, vip netip.Addr, timeout time.Duration) *netlab.Host {
	t.Helper()
	return (&annLab{net: l.net}).answering(t, vip, timeout)
}

// pinger pings from one lab host to another address for a fixed time, to
// prove the hosts' own traffic keeps flowing.
type pinger struct {
	what string
	done chan pingResult
}

// startPing pings dst from h every 20 ms for d.
func startPing(h *netlab.Host, dst netip.Addr, d time.Duration) *pinger {
	p := &pinger{what: h.Name + " -> " + dst.String(), done: make(chan pingResult, 1)}
	count := int(d / (20 * time.Millisecond))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
		defer cancel()
		out, err := h.Command(ctx, "ping", "-n", "-q", "-i", "0.02", "-W", "1", "-c", strconv.Itoa(count), dst.String()).CombinedOutput()
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(string(out))
		if m == nil {
			p.done <- pingResult{err: fmt.Errorf("ping output %q: %v", out, err)}
			return
		}
		tx, _ := strconv.Atoi(m[1])
		rx, _ := strconv.Atoi(m[2])
		p.done <- pingResult{sent: tx, lost: tx - rx}
	}()
	return p
}

// nodeTraffic pings, for d, every node from the previous one (both
// families) and the client from every node: the nodes' own traffic, which
// pvelb's edits of their IP filters must never cut.
func (l *trafficLab) nodeTraffic(d time.Duration) []*pinger {
	var out []*pinger
	ns := l.net.Nodes
	for i, n := range ns {
		peer := ns[(i+1)%len(ns)]
		out = append(out,
			startPing(n, peer.IPv4.Addr(), d),
			startPing(n, peer.IPv6.Addr(), d),
			startPing(n, l.net.Client.IPv4.Addr(), d))
	}
	return out
}

// checkNodeTraffic waits for the pings and fails the test for any loss.
// maxStrayLoss is how many pings of a path may be lost to scheduling on a
// loaded machine: fewer than one firewall pass's worth (see checkNodeTraffic).
const maxStrayLoss = 2

func checkNodeTraffic(t testing.TB, ps []*pinger) {
	t.Helper()
	for _, p := range ps {
		r := <-p.done
		switch {
		case r.err != nil:
			t.Errorf("ping %s: %v", p.what, r.err)
		case r.sent == 0:
			t.Errorf("ping %s: none sent", p.what)
		case r.lost > maxStrayLoss:
			t.Errorf("ping %s: %d of %d lost while pvelb edited the IP filters", p.what, r.lost, r.sent)
		case r.lost > 0:
			// A set missing the node's address would stay applied for at
			// least one firewall pass (200 ms, ten pings): one or two
			// isolated losses are the 2-core machine starving a process.
			t.Logf("ping %s: %d of %d lost (isolated; a cut-off would lose a pass's worth)", p.what, r.lost, r.sent)
		default:
			t.Logf("ping %s: %d sent, none lost", p.what, r.sent)
		}
	}
}

// metaDelete deletes in the foreground of nothing: the defaults, named for
// the call sites.
func metaDelete() metav1.DeleteOptions { return metav1.DeleteOptions{} }

// hammer sends a request through a VIP every period, each on a new
// connection (a new load-balancing decision and, on the node, a new
// conntrack entry), and records every failure with its time.
type hammer struct {
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failures []string
	byNode   map[string]int
}

func (l *trafficLab) hammer(url string, every time.Duration) *hammer {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hammer{start: time.Now(), cancel: cancel, byNode: map[string]int{}}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			h.wg.Add(1)
			go func(sent time.Time) {
				defer h.wg.Done()
				// Not ctx: a request under way when the hammer stops
				// still counts.
				a, err := l.get(context.Background(), url, 2*time.Second)
				h.mu.Lock()
				defer h.mu.Unlock()
				if err != nil {
					h.failures = append(h.failures, fmt.Sprintf("+%s: %v", sent.Sub(h.start).Round(time.Millisecond), err))
					return
				}
				h.ok++
				h.byNode[a.Node]++
			}(time.Now())
		}
	}()
	return h
}

// stop ends the requests, waits for those under way and returns what
// happened.
func (h *hammer) stop() (ok int, failures []string, byNode map[string]int) {
	h.cancel()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok, h.failures, h.byNode
}

// keeper holds one HTTP keep-alive connection through a VIP and sends a
// request on it every period, as a client with a pooled connection does. A
// second dial means the first connection broke (Go's transport silently
// redials an idempotent request whose reused connection died), so dials
// counts what a user would see as a reset.
type keeper struct {
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	dials  []string
	ends   []string // how connections ended, as their reader or writer saw it
	ok     int
	errs   []string
	answer map[string]int // pod name -> answers
}

func (l *trafficLab) keepAlive(url string, every time.Duration) *keeper {
	ctx, cancel := context.WithCancel(context.Background())
	k := &keeper{start: time.Now(), cancel: cancel, done: make(chan struct{}), answer: map[string]int{}}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := l.net.Client.DialContext(ctx, network, addr)
			k.mu.Lock()
			defer k.mu.Unlock()
			if err != nil {
				k.dials = append(k.dials, fmt.Sprintf("+%s: %v", time.Since(k.start).Round(time.Millisecond), err))
				return nil, err
			}
			k.dials = append(k.dials, fmt.Sprintf("+%s: %s", time.Since(k.start).Round(time.Millisecond), c.LocalAddr()))
			return &watchedConn{Conn: c, k: k}, nil
		},
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	go func() {
		defer close(k.done)
		defer tr.CloseIdleConnections()
		for {
			sent := time.Now()
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
			resp, err := hc.Do(req)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}
			var a datapath.Answer
			if err == nil {
				a, err = datapath.ParseAnswer(string(body))
			}
			k.mu.Lock()
			if err != nil {
				k.errs = append(k.errs, fmt.Sprintf("+%s: %v", sent.Sub(k.start).Round(time.Millisecond), err))
			} else {
				k.ok++
				k.answer[a.Pod]++
			}
			k.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(sent.Add(every))):
			}
		}
	}()
	return k
}

// watchedConn records how a keeper's connection ended: the transport
// redials silently, so the cause is only seen here.
type watchedConn struct {
	net.Conn
	k    *keeper
	once sync.Once
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.ended("read", err)
	}
	return n, err
}

func (c *watchedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.ended("write", err)
	}
	return n, err
}

func (c *watchedConn) ended(op string, err error) {
	if errors.Is(err, net.ErrClosed) {
		return // closed by this side: the keeper stopping
	}
	c.once.Do(func() {
		c.k.mu.Lock()
		defer c.k.mu.Unlock()
		c.k.ends = append(c.k.ends, fmt.Sprintf("+%s: %s %s: %v", time.Since(c.k.start).Round(time.Millisecond), c.LocalAddr(), op, err))
	})
}

func (k *keeper) stop() (ok int, errs, dials, ends []string, answers map[string]int) {
	k.cancel()
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ok, k.errs, k.dials, k.ends, k.answer
}

// nodeByMACHost is nodeByMAC returning the host.
func (l *annLab) nodeByMACHost(m net.HardwareAddr) *netlab.Host { return l.net.Host(l.nodeByMAC(m)) }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
