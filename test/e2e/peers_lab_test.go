package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/kubeapply"
	"github.com/pvelb/pvelb/test/netlab"
)

// lbImpl is one LoadBalancer implementation the side-by-side lab
// (BenchmarkPeers) runs in the traffic lab: the same nodes, apiserver,
// kube-proxy, backends and Proxmox firewall emulation for each. Each is run
// the way its own docs deploy it for L2 on Talos, as processes outside pods.
type lbImpl interface {
	// name is the implementation's name in the results.
	name() string
	// version is what was built and run.
	version() string
	// configured says in one sentence how it was configured.
	configured() string
	// setup starts the implementation's controllers and one announcer per
	// node once the lab's nodes, kube-proxies and pods are up.
	setup(t testing.TB, l *trafficLab)
	// startAnnouncer (re)starts the announcer of one node and records it in
	// l.ann.
	startAnnouncer(l *trafficLab, h *netlab.Host) *Process
}

// Versions of the peers, as pinned in test/peers/*/go.mod (one place to
// change with them: TestPeerVersionsPinned checks these against go.mod).
const (
	metallbVersion       = "v0.15.2"
	kubeVIPVersion       = "v1.0.0"
	kubeVIPCloudProvider = "v0.0.12"
)

// pvelbImpl is pvelb as newTrafficLab starts it: pvelb-ccm with firewall
// management, the IPPool "main" in ARP mode and pvelb-announcer per node.
type pvelbImpl struct{}

func (pvelbImpl) name() string    { return "pvelb" }
func (pvelbImpl) version() string { return "this tree" }
func (pvelbImpl) configured() string {
	return "pvelb-ccm with Proxmox firewall management (per-VIP admission), IPPool in ARP mode, pvelb-announcer on every node with its default membership timers (100 ms heartbeats, 350 ms dead-after)"
}
func (pvelbImpl) setup(testing.TB, *trafficLab) {}
func (pvelbImpl) startAnnouncer(l *trafficLab, h *netlab.Host) *Process {
	return l.startAnnouncer(h)
}

// peerBinary returns the path of a peer's binary built by `make peers`
// into bin/peers (PVELB_PEERS_BIN_DIR overrides), failing when missing: a
// benchmark of a peer that is not there measures nothing.
func peerBinary(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("PVELB_PEERS_BIN_DIR")
	if dir == "" {
		root, err := apiserver.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "bin", "peers")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not built (run `make peers`): %v", name, err)
	}
	return p
}

// peerModuleDir returns where the Go module cache holds a peer's module
// source, as pinned by its tools module under test/peers (for the CRDs
// MetalLB ships).
func peerModuleDir(t testing.TB, toolsModule, module string) string {
	t.Helper()
	root, err := apiserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return goModuleDir(t, filepath.Join(root, "test", "peers", toolsModule), "list", "-m", "-json", module)
}

// applyMetalLBCRDs applies MetalLB's CRDs as its module, unpacked in dir,
// ships them, and waits until they are established.
func applyMetalLBCRDs(ctx context.Context, t testing.TB, ap *kubeapply.Applier, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no MetalLB CRDs in %s (%v)", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kubeapply.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		widenInt32Bounds(objs) // BGPPeer's ASNs: see there
		if _, err := ap.ApplyCRDs(ctx, objs, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// moduleDir returns the directory of module@version in the module cache,
// downloading it through the module proxy if needed, without touching any
// go.mod or go.sum.
func moduleDir(t testing.TB, moduleAtVersion string) string {
	t.Helper()
	return goModuleDir(t, "", "mod", "download", "-json", moduleAtVersion)
}

// goModuleDir runs a go command (in dir) that describes one module as JSON,
// and returns the module's source directory.
func goModuleDir(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s (in %q): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go %s: no source directory (%v): %s", strings.Join(args, " "), err, out)
	}
	return m.Dir
}

// peerEnv runs bin in h's namespace with env set, as a container's
// environment would be.
func peerStart(l *trafficLab, netns string, env []string, bin string, args ...string) *Process {
	cmd := append([]string{"netns", "exec", netns, "env"}, env...)
	cmd = append(cmd, bin)
	return Start(l.top, "ip", append(cmd, args...)...)
}

// homeWithKubeconfig makes a HOME whose ~/.kube/config is kc, one of the
// lab's kubeconfigs: kube-vip and its cloud provider read only that one
// outside a pod.
func homeWithKubeconfig(t testing.TB, l *trafficLab, name, kc string) string {
	t.Helper()
	home := filepath.Join(l.dir, "home-"+name)
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// ensureNamespace creates a namespace and its default ServiceAccount (no
// ServiceAccount controller runs in the lab).
func ensureNamespace(t testing.TB, l *trafficLab, ns string) {
	t.Helper()
	ctx := context.Background()
	if _, err := l.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
	if _, err := l.kube.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// peerRange is the address range every implementation hands out: the same
// addresses pvelb's IPPool "main" holds (IPv4 part).
func peerRange() string { return netlab.VIP4(0).String() + "-" + netlab.VIP4(20).String() }

// metallbImpl is MetalLB in native L2 mode: its controller (webhooks off,
// as no apiserver here can call back into the lab's namespaces) and one
// speaker per node, its own CRDs from its module, an IPAddressPool and an
// L2Advertisement, memberlist with a shared secret, as its manifests run it.
type metallbImpl struct {
	secretDir string
}

const metallbNS = "metallb-system"

// metallbSpeakerLabels are the labels of MetalLB's speaker Pods, which its
// memberlist lists to find its peers (--ml-labels).
const metallbSpeakerLabels = "app=metallb,component=speaker"

func (*metallbImpl) name() string    { return "MetalLB" }
func (*metallbImpl) version() string { return metallbVersion }
func (*metallbImpl) configured() string {
	return "controller (--webhook-mode=disabled) and one speaker per node in native L2 mode (METALLB_BGP_TYPE=native), memberlist with a secret key, one IPAddressPool and one L2Advertisement in metallb-system, defaults otherwise"
}

func (m *metallbImpl) setup(t testing.TB, l *trafficLab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ap, err := kubeapply.New(l.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	applyMetalLBCRDs(ctx, t, ap, peerModuleDir(t, "metallb", "go.universe.tf/metallb"))
	ensureNamespace(t, l, metallbNS)
	cfg, err := kubeapply.Decode([]byte(fmt.Sprintf(`apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab, namespace: %[1]s}
spec:
  addresses: [%[2]s]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lab, namespace: %[1]s}
`, metallbNS, peerRange())))
	if err != nil {
		t.Fatal(err)
	}
	if err := ap.Apply(ctx, cfg, false); err != nil {
		t.Fatal(err)
	}
	// The memberlist key: what the controller would write into the
	// memberlist Secret and the speakers' pods mount.
	m.secretDir = filepath.Join(l.dir, "metallb-memberlist")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.MkdirAll(m.secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.secretDir, "secretkey"), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	peerStart(l, l.ctl.Netns, []string{"KUBECONFIG=" + l.cp.Kubeconfig, "METALLB_NAMESPACE=" + metallbNS},
		peerBinary(t, "controller"), "--webhook-mode=disabled", "--log-level=info")
	for _, h := range l.net.Nodes {
		m.speakerPod(t, l, h)
		m.startAnnouncer(l, h)
	}
}

// speakerPod creates the Pod object a speaker's DaemonSet pod would be:
// the speaker reads it at start and its memberlist finds peers by listing
// these Pods' status.podIP.
func (m *metallbImpl) speakerPod(t testing.TB, l *trafficLab, h *netlab.Host) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{}
	for kv := range strings.SplitSeq(metallbSpeakerLabels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: metallbNS, Name: "speaker-" + h.Name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: h.Name, HostNetwork: true,
			Containers: []corev1.Container{{Name: "speaker", Image: "quay.io/metallb/speaker:" + metallbVersion}},
		},
	}
	created, err := l.kube.CoreV1().Pods(metallbNS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := h.IPv4.Addr().String()
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: ip, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	if _, err := l.kube.CoreV1().Pods(metallbNS).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (m *metallbImpl) startAnnouncer(l *trafficLab, h *netlab.Host) *Process {
	p := peerStart(l, h.Netns, []string{
		"KUBECONFIG=" + l.cp.AnnouncerKubeconfig,
		"METALLB_NODE_NAME=" + h.Name,
		"METALLB_POD_NAME=speaker-" + h.Name,
		"METALLB_HOST=" + h.IPv4.Addr().String(),
		"METALLB_NAMESPACE=" + metallbNS,
		"METALLB_ML_BIND_ADDR=" + h.IPv4.Addr().String(),
		"METALLB_ML_LABELS=" + metallbSpeakerLabels,
		"METALLB_ML_SECRET_KEY_PATH=" + m.secretDir,
		"METALLB_BGP_TYPE=native",
	}, peerBinary(l.top, "speaker"), "--log-level=info")
	l.ann[h.Name] = p
	return p
}

// kubeVIPImpl is kube-vip in ARP mode with per-Service leader election, and
// kube-vip-cloud-provider handing out addresses from the kubevip ConfigMap
// (range-global), configured with the environment that kube-vip's own
// `kube-vip manifest daemonset --services --arp --leaderElection
// --servicesElection` generates.
type kubeVIPImpl struct{}

// kubeVIPCloudProviderPort is its secure port: not 10258 (pvelb-ccm), 10257
// (kube-controller-manager) nor 10260 (its own webhook port default).
const kubeVIPCloudProviderPort = 10262

func (kubeVIPImpl) name() string { return "kube-vip" }
func (kubeVIPImpl) version() string {
	return kubeVIPVersion + " + kube-vip-cloud-provider " + kubeVIPCloudProvider
}
func (kubeVIPImpl) configured() string {
	return "kube-vip manager per node with the environment of `kube-vip manifest daemonset --services --arp --leaderElection --servicesElection` (lease 5 s, renew 3 s, retry 1 s), kube-vip-cloud-provider with ConfigMap kubevip range-global"
}

func (k kubeVIPImpl) setup(t testing.TB, l *trafficLab) {
	t.Helper()
	ctx := context.Background()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "kubevip"},
		Data:       map[string]string{"range-global": peerRange()},
	}
	if _, err := l.kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc := l.cp.Kubeconfig
	bind := l.ctl.IPv4.Addr().String()
	home := homeWithKubeconfig(t, l, "kube-vip-cloud-provider", kc)
	p := peerStart(l, l.ctl.Netns, []string{"HOME=" + home}, peerBinary(t, "kube-vip-cloud-provider"),
		"--OutSideCluster=true", "--cloud-provider=kubevip", "--leader-elect=false",
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address="+bind, "--secure-port="+strconv.Itoa(kubeVIPCloudProviderPort),
		"--cert-dir="+filepath.Join(l.dir, "kvcp-certs"),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics", "--v=2")
	waitHealthz(t, p, l.ctl.DialContext, "https://"+net.JoinHostPort(bind, strconv.Itoa(kubeVIPCloudProviderPort))+"/healthz", 60*time.Second)
	for _, h := range l.net.Nodes {
		k.startAnnouncer(l, h)
	}
}

// kubeVIPEnv is the environment `kube-vip manifest daemonset --services
// --arp --leaderElection --servicesElection --interface <link>` writes into
// its DaemonSet (kube-vip v1.0.0), plus the node name the DaemonSet takes
// from the downward API.
func kubeVIPEnv(h *netlab.Host) []string {
	return []string{
		"vip_arp=true",
		"port=6443",
		"vip_nodename=" + h.Name,
		"vip_interface=" + h.Link,
		"dns_mode=first",
		"svc_enable=true",
		"svc_leasename=plndr-svcs-lock",
		"svc_election=true",
		"vip_leaderelection=true",
		"vip_leasename=plndr-cp-lock",
		"vip_leaseduration=5",
		"vip_renewdeadline=3",
		"vip_retryperiod=1",
		"vip_address=",
		"prometheus_server=:2112",
	}
}

func (kubeVIPImpl) startAnnouncer(l *trafficLab, h *netlab.Host) *Process {
	home := homeWithKubeconfig(l.top, l, "kube-vip-"+h.Name, l.cp.AnnouncerKubeconfig)
	p := peerStart(l, h.Netns, append(kubeVIPEnv(h), "HOME="+home), peerBinary(l.top, "kube-vip"), "manager")
	l.ann[h.Name] = p
	return p
}

// TestPeerVersionsPinned: the versions the results table names are the
// ones the tools modules under test/peers build.
func TestPeerVersionsPinned(t *testing.T) {
	root, err := apiserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, module, version string }{
		{"metallb", "go.universe.tf/metallb", metallbVersion},
		{"kube-vip", "github.com/kube-vip/kube-vip", kubeVIPVersion},
		{"kube-vip-cloud-provider", "github.com/kube-vip/kube-vip-cloud-provider", kubeVIPCloudProvider},
	} {
		b, err := os.ReadFile(filepath.Join(root, "test", "peers", c.dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\t"+c.module+" "+c.version+" ") && !strings.Contains(string(b), "\t"+c.module+" "+c.version+"\n") {
			t.Errorf("test/peers/%s/go.mod does not require %s %s", c.dir, c.module, c.version)
		}
	}
}
