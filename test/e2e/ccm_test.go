package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/pvesim"
)

// labVM is one Talos VM of the test cluster and the Node that stands for it.
type labVM struct {
	vmid       int
	host, name string
	uuid       string
	ip         string
}

var labVMs = []labVM{
	{101, "pve1", "talos-cp-1", "6b7d1f4e-0c1a-4a53-9b0e-000000000101", "192.0.2.11"},
	{102, "pve1", "talos-w-1", "6b7d1f4e-0c1a-4a53-9b0e-000000000102", "192.0.2.12"},
	{103, "pve2", "talos-w-2", "6b7d1f4e-0c1a-4a53-9b0e-000000000103", "192.0.2.13"},
}

const (
	uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
	shutdownTaint      = "node.cloudprovider.kubernetes.io/shutdown"
)

// Lab is a control plane, a Proxmox simulator holding labVMs and their Nodes.
type Lab struct {
	CP         *apiserver.ControlPlane
	Client     kubernetes.Interface
	PVE        *pvesim.TestServer
	ConfigFile string
}

func newLab(t *testing.T) *Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: starts kube-apiserver, etcd, the Proxmox simulator and pvelb-ccm")
	}
	cp := apiserver.StartT(t, apiserver.Options{})
	sim := pvesim.NewTestServer(t, pvesim.Options{})
	for _, vm := range labVMs {
		addVM(t, sim, vm)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte(sim.TokenSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`clusters:
  - region: lab
    url: %s
    tokenID: %q
    tokenSecretFile: %s
    caFile: %s
    timeout: 2s
instances:
  cacheTTL: 1s
`, sim.URL, sim.TokenID, secret, sim.CAFile)
	cfgFile := filepath.Join(dir, "cloud.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Lab{CP: cp, Client: cp.Client(), PVE: sim, ConfigFile: cfgFile}
}

// addVM creates the VM in the Proxmox simulator: 2 vCPUs, 4 GiB, one NIC
// behind the Proxmox firewall.
func addVM(t testing.TB, sim *pvesim.TestServer, vm labVM) {
	t.Helper()
	mac := fmt.Sprintf("BC:24:11:00:00:%02X", vm.vmid-100)
	if err := sim.AddVM(pvesim.VM{
		VMID: vm.vmid, Node: vm.host, Name: vm.name, UUID: vm.uuid,
		Cores: 2, Sockets: 1, MemoryMiB: 4096,
		Nets: map[int]string{0: "virtio=" + mac + ",bridge=vmbr0,firewall=1"},
	}); err != nil {
		t.Fatal(err)
	}
}

// createNodes registers the Nodes as a kubelet with --cloud-provider=external
// would: uninitialized taint, provided node IP, system UUID, NotReady (no
// kubelet heartbeats here, which is what lets the lifecycle controller act).
func (l *Lab) createNodes(t *testing.T) {
	t.Helper()
	for _, vm := range labVMs {
		l.createNode(t, vm)
	}
}

// createNode registers one VM's Node, as createNodes does.
func (l *Lab) createNode(t *testing.T, vm labVM) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        vm.name,
			Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": vm.ip},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
	}
	created, err := l.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = corev1.NodeStatus{
		NodeInfo:   corev1.NodeSystemInfo{SystemUUID: vm.uuid},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: "NodeStatusNeverUpdated", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if _, err := l.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// startCCM runs the built pvelb-ccm binary against the lab and waits for its
// healthz. It returns the process and its secure port.
func (l *Lab) startCCM(t testing.TB, extra ...string) (*Process, int) {
	t.Helper()
	port := freePort(t)
	args := []string{
		"--kubeconfig=" + l.CP.Kubeconfig,
		"--authentication-kubeconfig=" + l.CP.Kubeconfig,
		"--authorization-kubeconfig=" + l.CP.Kubeconfig,
		"--cloud-provider=proxmox",
		"--cloud-config=" + l.ConfigFile,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + t.TempDir(),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
		"--node-monitor-period=1s",
		"--leader-elect=true",
		"--leader-elect-lease-duration=4s",
		"--leader-elect-renew-deadline=3s",
		"--leader-elect-retry-period=500ms",
		"--v=2",
	}
	p := Start(t, Binary(t, "pvelb-ccm"), append(args, extra...)...)
	hc := &http.Client{Timeout: time.Second, Transport: insecureLoopback()}
	Eventually(t, 30*time.Second, "pvelb-ccm healthz", func(ctx context.Context) error {
		if p.Exited() {
			t.Fatalf("pvelb-ccm exited early:\n%s", p.Output())
		}
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	return p, port
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, tt := range n.Spec.Taints {
		if tt.Key == key {
			return true
		}
	}
	return false
}

// TestCCMInstances drives the real pvelb-ccm binary: Nodes are initialised
// from their Proxmox VMs, a stopped VM's Node is tainted, a deleted VM's Node
// is removed, and neither a Proxmox outage nor an unreachable Proxmox host
// gets a Node deleted.
func TestCCMInstances(t *testing.T) {
	l := newLab(t)
	l.createNodes(t)
	l.startCCM(t)
	nodes := l.Client.CoreV1().Nodes()

	for _, vm := range labVMs {
		Eventually(t, 30*time.Second, "node "+vm.name+" initialised", func(ctx context.Context) error {
			n, err := nodes.Get(ctx, vm.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if want := fmt.Sprintf("proxmox://lab/%d", vm.vmid); n.Spec.ProviderID != want {
				return errorf("providerID %q, want %q", n.Spec.ProviderID, want)
			}
			if hasTaint(n, uninitializedTaint) {
				return errorf("still has the uninitialized taint")
			}
			for k, want := range map[string]string{
				corev1.LabelTopologyRegion:     "lab",
				corev1.LabelTopologyZone:       vm.host,
				corev1.LabelInstanceTypeStable: "2VCPU-4GB",
				"pvelb.io/proxmox-host":        vm.host,
			} {
				if got := n.Labels[k]; got != want {
					return errorf("label %s=%q, want %q", k, got, want)
				}
			}
			var internal, hostname bool
			for _, a := range n.Status.Addresses {
				internal = internal || (a.Type == corev1.NodeInternalIP && a.Address == vm.ip)
				hostname = hostname || (a.Type == corev1.NodeHostName && a.Address == vm.name)
			}
			if !internal || !hostname {
				return errorf("addresses %v lack InternalIP %s or Hostname %s", n.Status.Addresses, vm.ip, vm.name)
			}
			return nil
		})
	}

	// A stopped VM: its Node gets the shutdown taint and stays.
	l.PVE.SetVMStatus(102, "stopped")
	Eventually(t, 20*time.Second, "talos-w-1 tainted shutdown", func(ctx context.Context) error {
		n, err := nodes.Get(ctx, "talos-w-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !hasTaint(n, shutdownTaint) {
			return errorf("no %s taint", shutdownTaint)
		}
		return nil
	})

	allNodesStay := func(ctx context.Context) error {
		list, err := nodes.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(list.Items) != len(labVMs) {
			return errorf("%d nodes left, want %d", len(list.Items), len(labVMs))
		}
		return nil
	}
	// A Proxmox outage: the lifecycle controller asks about every NotReady Node
	// once a second; none may be deleted.
	l.PVE.SetOutage(true)
	Consistently(t, 5*time.Second, "nodes during a Proxmox outage", allNodesStay)
	l.PVE.SetOutage(false)

	// An unreachable Proxmox host lists its VMs with status "unknown".
	l.PVE.SetHostOnline("pve2", false)
	Consistently(t, 5*time.Second, "nodes while pve2 is unreachable", allNodesStay)
	l.PVE.SetHostOnline("pve2", true)

	// The VM is really gone: its Node is deleted, the others stay.
	l.PVE.DeleteVM(103)
	Eventually(t, 20*time.Second, "talos-w-2 deleted", func(ctx context.Context) error {
		_, err := nodes.Get(ctx, "talos-w-2", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errorf("still there (err %v)", err)
	})
	if err := func() error {
		list, err := nodes.List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(list.Items) != 2 {
			return errorf("%d nodes, want 2", len(list.Items))
		}
		return nil
	}(); err != nil {
		t.Fatal(err)
	}
}
