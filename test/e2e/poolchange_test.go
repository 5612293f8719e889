package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/announcer/election"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvesim"
)

// fullLab is annLab with pvelb-ccm allocating: the Proxmox simulator and
// pvelb-ccm run in the control-plane namespace, Nodes are registered as
// kubelets would and initialised by pvelb-ccm from their VMs, whose IP
// filters are on, so every address is admitted before it is announced.
type fullLab struct {
	*annLab
	ctl *netlab.Host
}

const fullLabPVEPort = 8006

func newFullLab(t *testing.T) *fullLab {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: starts kube-apiserver, etcd, the Proxmox simulator, pvelb-ccm and announcers")
	}
	netlab.RequireTools(t, "ping")
	lab := netlab.New(t, netlab.Options{Nodes: 3, StrictARP: true})
	ctl := lab.AddHost(t, "ctl", 5)
	cp := apiserver.StartT(t, apiserver.Options{Netns: ctl.Netns, BindAddress: ctl.IPv4.Addr().String()})
	cp.Config.Dial = ctl.DialContext
	ApplyCRDs(t, cp)
	l := &fullLab{ctl: ctl, annLab: &annLab{
		net: lab, cp: cp, kube: cp.Client(), dyn: dynamic.NewForConfigOrDie(cp.Config),
		bin: announcerBinary(t), procs: map[string]*Process{}, top: t,
	}}
	dir := t.TempDir()
	l.secret = filepath.Join(dir, "secret")
	if err := os.WriteFile(l.secret, []byte(annSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The Proxmox simulator, served on the control-plane address.
	schema, err := pvesim.DefaultSchemaFile()
	if err != nil {
		t.Skipf("Proxmox API schema not found: %v", err)
	}
	token := pvesim.Token{ID: pvesim.DefaultTokenID, Secret: "6f1c2a9e-8d47-4b3a-9e21-0c5d7f3a1b2c"}
	sim, err := pvesim.New(pvesim.Options{SchemaFile: schema, Tokens: []pvesim.Token{token}})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range lab.Nodes {
		vmid := 101 + i
		if err := sim.AddVM(pvesim.VM{
			VMID: vmid, Node: fmt.Sprintf("pve%d", i+1), Name: h.Name, UUID: fmt.Sprintf("6b7d1f4e-0c1a-4a53-9b0e-000000000%d", vmid),
			Cores: 2, Sockets: 1, MemoryMiB: 4096,
			Nets: map[int]string{0: "virtio=" + strings.ToUpper(h.MAC.String()) + ",bridge=vmbr0,firewall=1"},
		}); err != nil {
			t.Fatal(err)
		}
		sim.SetFirewallOptions(vmid, true, true)
		sim.SeedIPSet(pve.VMScope(pve.VMRef{Node: fmt.Sprintf("pve%d", i+1), VMID: vmid}), "ipfilter-net0",
			pve.IPSetEntry{CIDR: h.IPv4.Addr().String(), Comment: "node address"})
	}
	cert, caPEM, err := pvesim.SelfSignedTLS(ctl.IPv4.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "pve-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pveAddr := net.JoinHostPort(ctl.IPv4.Addr().String(), strconv.Itoa(fullLabPVEPort))
	var ln net.Listener
	if err := netlab.InNetns(ctl.Netns, func() (err error) { ln, err = net.Listen("tcp", pveAddr); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: sim, ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1, as the simulator needs
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	// pvelb-ccm in the control-plane namespace.
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "cloud.yaml")
	cfg := fmt.Sprintf(`clusters:
  - region: lab
    url: https://%s/api2/json
    tokenID: %q
    tokenSecretFile: %s
    caFile: %s
    timeout: 3s
instances:
  cacheTTL: 1s
firewall:
  enabled: true
  nics: [net0]
  resyncPeriod: 5s
`, pveAddr, token.ID, tokenFile, caFile)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	kc, bind := cp.Kubeconfig, ctl.IPv4.Addr().String()
	ccmPort := 10258
	ccm := Start(t, "ip", "netns", "exec", ctl.Netns, Binary(t, "pvelb-ccm"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--cloud-provider=proxmox", "--cloud-config="+cfgFile,
		"--bind-address="+bind, "--secure-port="+strconv.Itoa(ccmPort), "--cert-dir="+filepath.Join(dir, "ccm-certs"),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
		"--node-monitor-period=1s", "--leader-elect=false", "--v=2")
	waitHealthz(t, ccm, ctl.DialContext, "https://"+net.JoinHostPort(bind, strconv.Itoa(ccmPort))+"/healthz", 60*time.Second)

	// Nodes as kubelets with --cloud-provider=external register them.
	ctx := context.Background()
	for i, h := range lab.Nodes {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: h.Name, Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": h.IPv4.Addr().String()}},
			Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
		}
		created, err := l.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		now := metav1.Now()
		created.Status = corev1.NodeStatus{
			NodeInfo:   corev1.NodeSystemInfo{SystemUUID: fmt.Sprintf("6b7d1f4e-0c1a-4a53-9b0e-000000000%d", 101+i)},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
		}
		if _, err := l.kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 60*time.Second, "Nodes initialised by pvelb-ccm", func(ctx context.Context) error {
		list, err := l.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, n := range list.Items {
			if n.Spec.ProviderID == "" || hasTaint(&n, uninitializedTaint) {
				return errorf("node %s not initialised", n.Name)
			}
		}
		return nil
	})
	for _, h := range lab.Nodes {
		l.start(t, h, l.secret)
	}
	return l
}

func (l *fullLab) createPool(t *testing.T, name string, first, last netip.Addr) {
	t.Helper()
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"addresses": []any{first.String() + "-" + last.String()},
			"announce":  map[string]any{"mode": "arp"},
		},
	}}
	if _, err := l.dyn.Resource(ippoolGVR).Create(context.Background(), pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (l *fullLab) deletePool(t *testing.T, name string) {
	t.Helper()
	if err := l.dyn.Resource(ippoolGVR).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// events returns the Service's Events with the reason, as "message" ->
// count (a repeated Event is counted, not written again).
func (l *fullLab) events(ctx context.Context, svc, reason string) (map[string]int32, error) {
	list, err := l.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
		"involvedObject.name": svc, "involvedObject.kind": "Service", "reason": reason}.AsSelector().String()})
	if err != nil {
		return nil, err
	}
	out := map[string]int32{}
	for _, e := range list.Items {
		out[e.Message] += max(e.Count, 1)
	}
	return out, nil
}

// An IPPool renamed over the same range, then deleted: pvelb-ccm keeps the
// Service's address through both (it documents that it never moves one), so
// the address must stay announced by the same node throughout, with no
// NotAnnounced warning, and pvelb.io/allocated-pool must follow the rename.
func TestPoolChangesKeepAddressesAnnounced(t *testing.T) {
	l := newFullLab(t)
	ctx := context.Background()
	first, last := netlab.VIP4(0), netlab.VIP4(9)
	l.createPool(t, "old", first, last)
	svcs := l.kube.CoreV1().Services("default")
	if _, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var vip netip.Addr
	Eventually(t, 60*time.Second, "EXTERNAL-IP from IPPool old", func(ctx context.Context) error {
		s, err := svcs.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Status.LoadBalancer.Ingress) != 1 || s.Annotations["pvelb.io/allocated-pool"] != "old" {
			return errorf("ingress %v, annotations %v", s.Status.LoadBalancer.Ingress, s.Annotations)
		}
		vip, err = netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
		return err
	})
	// Wait for the steady state: the node the election picks among all
	// three (an earlier answer may come from a node that was alone in the
	// membership or admitted first, and moves back by design).
	nodes, err := l.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cands []election.Candidate
	for _, n := range nodes.Items {
		cands = append(cands, election.Candidate{Name: n.Name, Zone: n.Labels[corev1.LabelTopologyZone]})
	}
	want, _ := election.Elect(vip, cands, func(string) bool { return true })
	var winner *netlab.Host
	Eventually(t, 60*time.Second, "the elected node "+want+" answers", func(ctx context.Context) error {
		if winner = l.answering(t, vip, 10*time.Second); winner.Name != want {
			return errorf("%s answers", winner.Name)
		}
		return nil
	})
	t.Logf("%s answers for %s", winner.Name, vip)

	// stillAnswered fails unless exactly the winner answers, on every poll.
	stillAnswered := func(what string) {
		t.Helper()
		Consistently(t, 3*time.Second, what, func(ctx context.Context) error {
			macs, err := l.net.Client.Arping(ctx, vip, 2, 100*time.Millisecond)
			if err != nil {
				return err
			}
			if len(macs) != 1 || macs[0].String() != winner.MAC.String() {
				return errorf("answers for %s from %v, want only %s (%s)", vip, macs, winner.Name, winner.MAC)
			}
			return nil
		})
	}
	// noWarning fails on any NotAnnounced Event since the pools changed
	// (the announcers may warn while they first hear each other).
	before, err := l.events(ctx, "web", "NotAnnounced")
	if err != nil {
		t.Fatal(err)
	}
	noWarning := func() {
		t.Helper()
		now, err := l.events(ctx, "web", "NotAnnounced")
		if err != nil {
			t.Fatal(err)
		}
		for msg, n := range now {
			if n > before[msg] {
				t.Fatalf("NotAnnounced since the pools changed: %q", msg)
			}
		}
	}

	// Renamed the way kubectl apply of a renamed manifest plus a delete of
	// the old one does it: the new pool first, over the same range.
	l.createPool(t, "new", first, last)
	l.deletePool(t, "old")
	stillAnswered("announced after the rename")
	noWarning()
	Eventually(t, 30*time.Second, "pvelb.io/allocated-pool follows the rename", func(ctx context.Context) error {
		s, err := svcs.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := s.Annotations["pvelb.io/allocated-pool"]; got != "new" {
			return errorf("annotation %q", got)
		}
		if len(s.Status.LoadBalancer.Ingress) != 1 || s.Status.LoadBalancer.Ingress[0].IP != vip.String() {
			return errorf("address moved: %v", s.Status.LoadBalancer.Ingress)
		}
		return nil
	})

	// Deleted: pvelb-ccm keeps the address (a Warning says so), and the
	// announcer keeps answering for it with the default settings.
	l.deletePool(t, "new")
	Eventually(t, 30*time.Second, "AddressOutsidePools warning", func(ctx context.Context) error {
		evs, err := l.events(ctx, "web", "AddressOutsidePools")
		if err != nil || len(evs) == 0 {
			return errorf("events %v, %v", evs, err)
		}
		return nil
	})
	stillAnswered("announced with no pool holding the address")
	noWarning()
	if got := l.metric(t, winner, `pvelb_announcer_unannounced_ips{reason="NoPool"}`); got != 0 {
		t.Errorf("unannounced NoPool IPs on %s: %v", winner.Name, got)
	}
	s, err := svcs.Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Annotations["pvelb.io/allocated-pool"]; got != "new" {
		t.Errorf("annotation after the pool was deleted: %q, want the last pool, new, kept", got)
	}
}
