// Package lab is `pvelbctl lab`: the whole of pvelb running on one machine,
// for a person to watch and explore. A real kube-apiserver and etcd, the
// Proxmox VE simulator, pvelb-ccm and one pvelb-announcer per node run in
// network namespaces joined by a bridge (standing for Proxmox's vmbr0), with
// a client namespace that reaches the VIP through the kernel's own ARP. The
// lab then creates an IPPool and a Service and shows, step by step, what
// pvelb does: Nodes initialised from their VMs, the EXTERNAL-IP, the Proxmox
// IPSet entries, the client reaching the VIP and a failover with its
// measured time. Everything is torn down when the lab stops, also on error.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvesim"
)

// Options shape a lab run.
type Options struct {
	// Nodes is the number of Kubernetes nodes (Proxmox VMs); default 3.
	Nodes int
	// Failover cuts the announcing node's link and measures the outage.
	Failover bool
	// ExitAfterDemo tears down right after the scripted part instead of
	// waiting for ctx to end (tests use it).
	ExitAfterDemo bool
	// KeepGoing keeps the lab up for inspection when a demo check fails,
	// instead of tearing it down at once.
	KeepGoing bool
	// StateDir holds kubeconfigs, certificates and logs. Empty: a temporary
	// directory, removed at the end; a given one is kept.
	StateDir string
	// BinDir holds kube-apiserver, etcd, pvelb-ccm and pvelb-announcer.
	BinDir string
	// RepoDir is the pvelb checkout (for manifests/crds).
	RepoDir string
	// SchemaFile is the Proxmox API schema the simulator checks requests against.
	SchemaFile string
	// HostAPIPort is the loopback port the apiserver is forwarded to (0: 6443
	// if free, else any).
	HostAPIPort int
	Out         io.Writer
}

const (
	region       = "lab"
	clusterIPSet = "pvelb-vips"
	vmIPSet      = "ipfilter-net0"
	poolName     = "demo"
	serviceName  = "web"
	ctlOctet     = 5
	pvePort      = 8006
	ccmPort      = 10258
	annPort      = 7948
	tokenID      = "pvelb@pve!ccm"
	ippoolRes    = "ippools"
)

var (
	ippoolGVR = schema.GroupVersionResource{Group: "pvelb.io", Version: "v1alpha1", Resource: ippoolRes}
	crdGVR    = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	// poolRange is where the demo's VIPs come from: the top of the lab's
	// documentation subnet, so the client reaches them over the bridge.
	poolFirst, poolLast = netlab.VIP4(0), netlab.VIP4(9)
)

// vm is one Proxmox VM of the lab and the Kubernetes node it runs.
type vm struct {
	host    *netlab.Host
	vmid    int
	pveHost string
	uuid    string
}

// Lab is a running lab.
type Lab struct {
	opts    Options
	p       *printer
	dir     string
	ownDir  bool
	net     *netlab.Lab
	ctl     *netlab.Host
	cp      *apiserver.ControlPlane
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	sim     *pvesim.Server
	simSrv  *http.Server
	ccm     *proc
	ann     map[string]*proc
	vms     []*vm
	fwd     *forwarder
	hostKC  string
	secret  string
	cleanup []func()
	vip     netip.Addr
}

// Run builds the lab, runs the demo, then waits for ctx to end (unless
// ExitAfterDemo) and tears everything down. Setup failures are returned
// after the teardown.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 2 || opts.Nodes > 20 {
		return fmt.Errorf("--nodes: %d out of 2..20 (a failover needs a second node)", opts.Nodes)
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	l := &Lab{opts: opts, ann: map[string]*proc{}, p: &printer{w: opts.Out, start: time.Now(), total: 10}}
	if !opts.Failover {
		l.p.total--
	}
	if err := l.preflight(); err != nil {
		return err
	}
	defer l.teardown()

	l.p.plain("pvelb lab: a Kubernetes control plane, a Proxmox VE simulator, pvelb-ccm and %d announcer nodes", opts.Nodes)
	l.p.plain("in network namespaces on this machine. State and logs: %s", l.dir)
	steps := []struct {
		title string
		fn    func(context.Context) error
	}{
		{"Network: a bridge standing for Proxmox's vmbr0 (192.0.2.0/24), node, client and control-plane namespaces", l.startNetwork},
		{"Kubernetes: kube-apiserver and etcd in the control-plane namespace, pvelb CRDs", l.startControlPlane},
		{"Proxmox VE simulator: VMs on two Proxmox hosts, their ipfilter-net0 IPSets seeded with their own addresses", l.startProxmox},
		{"pvelb-ccm, and Nodes registered as kubelets with --cloud-provider=external do", l.startCCMAndNodes},
		{"pvelb-announcer on every node (kube-proxy IPVS strictARP emulated)", l.startAnnouncers},
		{"IPPool and a LoadBalancer Service (kubectl create service loadbalancer web --tcp=80:80)", l.createService},
		{"Proxmox firewall IPSets admitting the VIP", l.showIPSets},
		{"The client reaches the VIP", l.reachVIP},
	}
	if opts.Failover {
		steps = append(steps, struct {
			title string
			fn    func(context.Context) error
		}{"Failover: the announcing node loses its network (cable pulled); the client pings every 10 ms", l.failover})
	}
	steps = append(steps, struct {
		title string
		fn    func(context.Context) error
	}{"kubectl access from the host", l.exposeAPI})

	var demoErr error
	for _, s := range steps {
		if err := l.p.step(s.title, func() error { return s.fn(ctx) }); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
			// The infrastructure steps are fatal; a failed demo check can be
			// inspected with --keep-going.
			if !opts.KeepGoing || l.cp == nil || l.ccm == nil {
				return err
			}
			demoErr = errors.Join(demoErr, err)
		}
	}
	l.printAccess()
	if opts.ExitAfterDemo {
		l.p.plain("\nDemo finished (--exit-after-demo): tearing down.")
		return demoErr
	}
	l.p.plain("\nPress Ctrl-C to stop the lab; everything it started is torn down.")
	<-ctx.Done()
	l.p.plain("\nStopping: tearing down the lab...")
	return demoErr
}

// preflight checks what the lab needs before creating anything, and names
// exactly what is missing.
func (l *Lab) preflight() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces): run as root, e.g. sudo make demo")
	}
	for _, tool := range []string{"ip", "ping", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian: apt-get install iproute2 iputils-ping curl)", tool))
		}
	}
	for _, b := range []string{"kube-apiserver", "etcd", "pvelb-ccm", "pvelb-announcer"} {
		if _, err := os.Stat(filepath.Join(l.opts.BinDir, b)); err != nil {
			missing = append(missing, fmt.Sprintf("%s in %s (make kube-bins build)", b, l.opts.BinDir))
		}
	}
	if l.opts.RepoDir == "" {
		missing = append(missing, "the pvelb checkout (for manifests/crds): give --repo-dir")
	} else if m, _ := filepath.Glob(filepath.Join(l.opts.RepoDir, "manifests", "crds", "*.yaml")); len(m) == 0 {
		missing = append(missing, "CRDs in "+filepath.Join(l.opts.RepoDir, "manifests", "crds"))
	}
	if _, err := os.Stat(l.opts.SchemaFile); l.opts.SchemaFile == "" || err != nil {
		missing = append(missing, "the Proxmox API schema shared/pve-api/apidata-pve9.1.3.js beside the checkout (or --pve-schema, or $PVELB_PVE_API_DIR)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the lab cannot start; missing:\n  - %s", strings.Join(missing, "\n  - "))
	}
	if l.opts.StateDir == "" {
		d, err := os.MkdirTemp("", "pvelb-lab-")
		if err != nil {
			return err
		}
		l.dir, l.ownDir = d, true
	} else {
		if err := os.MkdirAll(l.opts.StateDir, 0o700); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
		abs, err := filepath.Abs(l.opts.StateDir)
		if err != nil {
			return err
		}
		l.dir = abs
	}
	return nil
}

func (l *Lab) onTeardown(f func()) { l.cleanup = append(l.cleanup, f) }

// teardown undoes everything in reverse order. It runs on every exit path.
func (l *Lab) teardown() {
	for i := len(l.cleanup) - 1; i >= 0; i-- {
		l.cleanup[i]()
	}
	l.cleanup = nil
	if l.ownDir {
		_ = os.RemoveAll(l.dir)
	}
	l.p.plain("Lab torn down: processes stopped, namespaces removed%s.", map[bool]string{true: ", state directory removed", false: ""}[l.ownDir])
}

func (l *Lab) startNetwork(context.Context) error {
	n, err := netlab.Build(netlab.Options{Nodes: l.opts.Nodes, StrictARP: true}, func(f string, a ...any) {
		l.p.say(f, a...)
	})
	if err != nil {
		return err
	}
	l.net = n
	l.onTeardown(n.Close)
	if l.ctl, err = n.Add("ctl", ctlOctet); err != nil {
		return err
	}
	for i, h := range n.Nodes {
		pveHost := "pve1"
		// Two thirds of the VMs on pve1, the rest on pve2: with 3 nodes,
		// pve1 runs two VMs and pve2 one.
		if i >= l.opts.Nodes-l.opts.Nodes/3 {
			pveHost = "pve2"
		}
		l.vms = append(l.vms, &vm{host: h, vmid: 101 + i, pveHost: pveHost,
			uuid: fmt.Sprintf("6b7d1f4e-0c1a-4a53-9b0e-%012d", 101+i)})
	}
	tw := l.table()
	tw.row("NAMESPACE\tROLE\tADDRESS\tMAC")
	tw.row("%s\tcontrol plane + Proxmox API\t%s\t%s", l.ctl.Netns, l.ctl.IPv4.Addr(), l.ctl.MAC)
	for _, v := range l.vms {
		tw.row("%s\t%s (VM %d on %s)\t%s\t%s", v.host.Netns, v.host.Name, v.vmid, v.pveHost, v.host.IPv4.Addr(), v.host.MAC)
	}
	tw.row("%s\tclient\t%s\t%s", n.Client.Netns, n.Client.IPv4.Addr(), n.Client.MAC)
	tw.print()
	return nil
}

// table collects tab-separated rows and prints them aligned, inside a step.
type table struct {
	p   *printer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func (l *Lab) table() *table {
	t := &table{p: l.p}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) row(format string, args ...any) { fmt.Fprintf(t.tw, format+"\n", args...) }

func (t *table) print() {
	_ = t.tw.Flush()
	t.p.say("%s", strings.TrimRight(t.buf.String(), "\n"))
}

func (l *Lab) startControlPlane(ctx context.Context) error {
	dir := filepath.Join(l.dir, "apiserver")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	l.p.say("starting etcd and kube-apiserver on %s (logs in %s)", l.ctl.IPv4.Addr(), dir)
	cp, err := apiserver.Start(ctx, apiserver.Options{
		Netns: l.ctl.Netns, BindAddress: l.ctl.IPv4.Addr().String(),
		Dir: dir, BinDir: l.opts.BinDir,
	})
	if err != nil {
		return err
	}
	l.cp = cp
	l.onTeardown(cp.Stop)
	// pvelbctl reaches the apiserver from inside the namespace.
	cp.Config.Dial = l.ctl.DialContext
	l.kube = kubernetes.NewForConfigOrDie(cp.Config)
	l.dyn = dynamic.NewForConfigOrDie(cp.Config)
	l.p.say("kube-apiserver ready at %s", cp.URL)
	return l.applyCRDs(ctx)
}

func (l *Lab) applyCRDs(ctx context.Context) error {
	files, _ := filepath.Glob(filepath.Join(l.opts.RepoDir, "manifests", "crds", "*.yaml"))
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := l.dyn.Resource(crdGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating CRD from %s: %w", f, err)
		}
		names = append(names, obj.GetName())
	}
	for _, name := range names {
		if err := poll(ctx, 30*time.Second, "CRD "+name+" established", func(ctx context.Context) error {
			crd, err := l.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return errors.New("not established yet")
		}); err != nil {
			return err
		}
	}
	l.p.say("CRDs established: %s", strings.Join(names, ", "))
	return nil
}

func (l *Lab) startProxmox(ctx context.Context) error {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	l.secret = hex.EncodeToString(b)
	sim, err := pvesim.New(pvesim.Options{SchemaFile: l.opts.SchemaFile, Tokens: []pvesim.Token{{ID: tokenID, Secret: l.secret}}})
	if err != nil {
		return err
	}
	l.sim = sim
	for _, v := range l.vms {
		if err := sim.AddVM(pvesim.VM{
			VMID: v.vmid, Node: v.pveHost, Name: v.host.Name, UUID: v.uuid,
			Cores: 2, Sockets: 1, MemoryMiB: 4096,
			// The VM's NIC has the MAC of the node namespace's interface, so
			// the MAC the client learns for the VIP names a Proxmox VM.
			Nets: map[int]string{0: "virtio=" + strings.ToUpper(v.host.MAC.String()) + ",bridge=vmbr0,firewall=1"},
		}); err != nil {
			return err
		}
		// A careful user runs the IP filter with the VM's own address
		// admitted: without it Proxmox drops the VM's own traffic.
		sim.SetFirewallOptions(v.vmid, true, true)
		sim.SeedIPSet(vmScope(v), vmIPSet, pve.IPSetEntry{CIDR: v.host.IPv4.Addr().String(), Comment: "node address"})
	}
	addr := net.JoinHostPort(l.ctl.IPv4.Addr().String(), strconv.Itoa(pvePort))
	cert, caPEM, err := pvesim.SelfSignedTLS(l.ctl.IPv4.Addr().String())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.dir, "pve-ca.pem"), caPEM, 0o644); err != nil {
		return err
	}
	var ln net.Listener
	if err := netlab.InNetns(l.ctl.Netns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listening for the Proxmox API in %s: %w", l.ctl.Netns, err)
	}
	l.simSrv = &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only, as the simulator's standalone command does.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = l.simSrv.ServeTLS(ln, "", "") }()
	l.onTeardown(func() { _ = l.simSrv.Close() })

	tw := l.table()
	tw.row("PROXMOX HOST\tVMID\tNAME\tNET0\tFIREWALL\tipfilter-net0")
	for _, v := range l.vms {
		tw.row("%s\t%d\t%s\tvirtio=%s,bridge=vmbr0,firewall=1\tenabled, ipfilter=1\t%s",
			v.pveHost, v.vmid, v.host.Name, v.host.MAC, v.host.IPv4.Addr())
	}
	tw.print()
	l.p.say("Proxmox API: https://%s/api2/json (token %s, in the control-plane namespace)", addr, tokenID)
	return nil
}

func vmScope(v *vm) pve.Scope { return pve.VMScope(pve.VMRef{Node: v.pveHost, VMID: v.vmid}) }

func (l *Lab) cloudConfig() (string, error) {
	secretFile := filepath.Join(l.dir, "proxmox-token")
	if err := os.WriteFile(secretFile, []byte(l.secret+"\n"), 0o600); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`clusters:
  - region: %s
    url: https://%s/api2/json
    tokenID: %q
    tokenSecretFile: %s
    caFile: %s
    timeout: 3s
instances:
  cacheTTL: 2s
firewall:
  enabled: true
  clusterIPSet: %s
  nics: [net0]
  resyncPeriod: 30s
`, region, net.JoinHostPort(l.ctl.IPv4.Addr().String(), strconv.Itoa(pvePort)), tokenID, secretFile,
		filepath.Join(l.dir, "pve-ca.pem"), clusterIPSet)
	path := filepath.Join(l.dir, "cloud-config.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

func (l *Lab) startCCM(ctx context.Context) error {
	cfgFile, err := l.cloudConfig()
	if err != nil {
		return err
	}
	kc := l.cp.Kubeconfig
	bind := l.ctl.IPv4.Addr().String()
	p, err := startInNetns(l.ctl.Netns, l.dir, "pvelb-ccm", filepath.Join(l.opts.BinDir, "pvelb-ccm"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--cloud-provider=proxmox", "--cloud-config="+cfgFile,
		"--bind-address="+bind, "--secure-port="+strconv.Itoa(ccmPort),
		"--cert-dir="+filepath.Join(l.dir, "ccm-certs"),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
		"--node-monitor-period=2s", "--leader-elect=false", "--v=2")
	if err != nil {
		return err
	}
	l.ccm = p
	l.onTeardown(func() { p.stop(5 * time.Second) })
	// pvelb-ccm serves its health endpoint with a certificate it generated
	// itself into --cert-dir; this process started it in its own namespace.
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext:     l.ctl.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // own process, self-signed
	}}
	url := fmt.Sprintf("https://%s/healthz", net.JoinHostPort(bind, strconv.Itoa(ccmPort)))
	if err := p.waitOK(ctx, hc, url, 60*time.Second, "pvelb-ccm healthz"); err != nil {
		return err
	}
	l.p.say("pvelb-ccm healthy (log: %s)", p.log)
	return nil
}

func (l *Lab) startCCMAndNodes(ctx context.Context) error {
	if err := l.startCCM(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	for _, v := range l.vms {
		if err := l.registerNode(ctx, v); err != nil {
			return err
		}
	}
	l.p.say("Nodes created with the %s taint, provided-node-ip and systemUUID", uninitializedTaint)
	var nodes []corev1.Node
	if err := poll(ctx, 60*time.Second, "Nodes initialised by pvelb-ccm", func(ctx context.Context) error {
		list, err := l.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if l.ccm.exited() {
			return &fatal{l.ccm.exitError()}
		}
		for _, n := range list.Items {
			if n.Spec.ProviderID == "" || hasTaint(&n, uninitializedTaint) || n.Labels[corev1.LabelTopologyZone] == "" || internalIP(&n) == "" {
				return fmt.Errorf("node %s not initialised yet", n.Name)
			}
		}
		nodes = list.Items
		return nil
	}); err != nil {
		return err
	}
	l.p.say("all %d Nodes initialised in %s:", len(nodes), since(t0))
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	tw := l.table()
	tw.row("NODE\tPROVIDER-ID\tREGION\tZONE\tINSTANCE-TYPE\tINTERNAL-IP\tTAINTS")
	for _, n := range nodes {
		taints := "none"
		if len(n.Spec.Taints) > 0 {
			var ks []string
			for _, t := range n.Spec.Taints {
				ks = append(ks, t.Key)
			}
			taints = strings.Join(ks, ",")
		}
		tw.row("%s\t%s\t%s\t%s\t%s\t%s\t%s", n.Name, n.Spec.ProviderID, n.Labels[corev1.LabelTopologyRegion],
			n.Labels[corev1.LabelTopologyZone], n.Labels[corev1.LabelInstanceTypeStable], internalIP(&n), taints)
	}
	tw.print()
	return nil
}

const uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

// registerNode creates a Node as a kubelet with --cloud-provider=external
// does: tainted uninitialized, the --node-ip in the provided-node-ip
// annotation and the VM's SMBIOS UUID as systemUUID. There is no kubelet to
// heartbeat, so the lab reports the Node Ready once, as a kubelet would.
func (l *Lab) registerNode(ctx context.Context, v *vm) error {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        v.host.Name,
			Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": v.host.IPv4.Addr().String()},
			Labels:      map[string]string{corev1.LabelHostname: v.host.Name, corev1.LabelOSStable: "linux"},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
	}
	created, err := l.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Node %s: %w", n.Name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		NodeInfo: corev1.NodeSystemInfo{SystemUUID: v.uuid, KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64"},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "pvelbctl lab: no kubelet runs here", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	updated, err := l.kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("status of Node %s: %w", n.Name, err)
	}
	// Admission taints every new Node not-ready; kube-controller-manager
	// lifts it once the Node reports Ready. None runs here, so the lab does.
	var keep []corev1.Taint
	for _, t := range updated.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			keep = append(keep, t)
		}
	}
	if len(keep) != len(updated.Spec.Taints) {
		updated.Spec.Taints = keep
		if _, err := l.kube.CoreV1().Nodes().Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("taints of Node %s: %w", n.Name, err)
		}
	}
	return nil
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

func (l *Lab) startAnnouncers(ctx context.Context) error {
	secretFile := filepath.Join(l.dir, "membership-secret")
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		return err
	}
	for _, v := range l.vms {
		if err := l.startAnnouncer(v.host); err != nil {
			return err
		}
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: l.net.Client.DialContext}}
	for _, v := range l.vms {
		p := l.ann[v.host.Name]
		url := "http://" + net.JoinHostPort(v.host.IPv4.Addr().String(), strconv.Itoa(annPort)) + "/readyz"
		if err := p.waitOK(ctx, hc, url, 30*time.Second, "announcer on "+v.host.Name+" ready"); err != nil {
			return err
		}
	}
	l.p.say("%d announcers ready; they watch each other with authenticated UDP heartbeats on the node network", len(l.vms))
	l.p.say("each node has kube-ipvs0 with arp_ignore=1/arp_announce=2, so only an announcer answers ARP for a VIP")
	return nil
}

func (l *Lab) startAnnouncer(h *netlab.Host) error {
	p, err := startInNetns(h.Netns, l.dir, "pvelb-announcer-"+h.Name, filepath.Join(l.opts.BinDir, "pvelb-announcer"),
		"--kubeconfig="+l.cp.Kubeconfig, "--node-name="+h.Name,
		"--membership-secret-file="+filepath.Join(l.dir, "membership-secret"),
		"--metrics-bind-address="+net.JoinHostPort(h.IPv4.Addr().String(), strconv.Itoa(annPort)),
		"--v=2")
	if err != nil {
		return err
	}
	l.ann[h.Name] = p
	l.onTeardown(func() { p.stop(3 * time.Second) })
	return nil
}

func (l *Lab) createService(ctx context.Context) error {
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": poolName},
		"spec": map[string]any{
			"addresses": []any{poolFirst.String() + "-" + poolLast.String()},
			"announce":  map[string]any{"mode": "arp"},
		},
	}}
	if _, err := l.dyn.Resource(ippoolGVR).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating IPPool %s: %w", poolName, err)
	}
	l.p.say("IPPool %s: %s-%s, announced by ARP", poolName, poolFirst, poolLast)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: serviceName, Labels: map[string]string{"app": serviceName}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": serviceName},
			Ports:    []corev1.ServicePort{{Name: "80-80", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
		},
	}
	t0 := time.Now()
	if _, err := l.kube.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s: %w", serviceName, err)
	}
	var got *corev1.Service
	if err := poll(ctx, 60*time.Second, "EXTERNAL-IP of Service "+serviceName, func(ctx context.Context) error {
		s, err := l.kube.CoreV1().Services("default").Get(ctx, serviceName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Status.LoadBalancer.Ingress) == 0 || s.Status.LoadBalancer.Ingress[0].IP == "" {
			return errors.New("no EXTERNAL-IP yet")
		}
		got = s
		return nil
	}); err != nil {
		return err
	}
	vip, err := netip.ParseAddr(got.Status.LoadBalancer.Ingress[0].IP)
	if err != nil {
		return err
	}
	l.vip = vip
	tw := l.table()
	tw.row("NAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)")
	tw.row("%s\t%s\t%s\t%s\t80:%d/TCP", got.Name, got.Spec.Type, got.Spec.ClusterIP, vip, got.Spec.Ports[0].NodePort)
	tw.print()
	l.p.say("EXTERNAL-IP %s assigned %s after the Service was created (pool %s)", vip, since(t0), got.Annotations["pvelb.io/allocated-pool"])
	// kube-proxy in IPVS mode binds every LoadBalancer IP to kube-ipvs0 on
	// every node; no kube-proxy runs here, so the lab does it.
	for _, v := range l.vms {
		if err := v.host.AddVIP(vip); err != nil {
			return err
		}
	}
	l.p.say("as kube-proxy (IPVS) would, %s is bound to kube-ipvs0 on every node", vip)
	return nil
}

// ipsetView is one IPSet as the lab shows it.
type ipsetView struct {
	title   string
	entries []pve.IPSetEntry
}

func (l *Lab) showIPSets(ctx context.Context) error {
	cidr := l.vip.String()
	var sets []ipsetView
	if err := poll(ctx, 60*time.Second, "VIP "+cidr+" in the Proxmox IPSets", func(context.Context) error {
		sets = sets[:0]
		cl := l.sim.IPSetEntries(pve.ClusterScope, clusterIPSet)
		if !hasCIDR(cl, cidr) {
			return fmt.Errorf("cluster IPSet %s lacks %s", clusterIPSet, cidr)
		}
		sets = append(sets, ipsetView{"cluster firewall, IPSet " + clusterIPSet + " (for your firewall rules)", cl})
		for _, v := range l.vms {
			es := l.sim.IPSetEntries(vmScope(v), vmIPSet)
			if !hasCIDR(es, cidr) {
				return fmt.Errorf("VM %d's %s lacks %s", v.vmid, vmIPSet, cidr)
			}
			sets = append(sets, ipsetView{fmt.Sprintf("VM %d (%s on %s), IPSet %s", v.vmid, v.host.Name, v.pveHost, vmIPSet), es})
		}
		return nil
	}); err != nil {
		return err
	}
	l.p.say("entries marked [pvelb] were written by pvelb; [yours] were there before and are never touched")
	for _, s := range sets {
		l.p.say("%s:", s.title)
		tw := l.table()
		for _, e := range s.entries {
			who := "[yours]"
			if firewall.IsOurs(e.Comment) {
				who = "[pvelb]"
			}
			tw.row("  %s\t%s\t%s", who, e.CIDR, e.Comment)
		}
		tw.print()
	}
	l.p.say("without these entries Proxmox's IP filter would drop the nodes' ARP replies for %s", cidr)
	return nil
}

func hasCIDR(es []pve.IPSetEntry, cidr string) bool {
	for _, e := range es {
		if e.CIDR == cidr {
			return true
		}
	}
	return false
}

// nodeByMAC names the lab node that owns mac.
func (l *Lab) nodeByMAC(mac net.HardwareAddr) *vm {
	for _, v := range l.vms {
		if v.host.MAC.String() == mac.String() {
			return v
		}
	}
	return nil
}

// answering pings the VIP once from the client and reads which MAC the
// client's kernel resolved it to.
func (l *Lab) answering(ctx context.Context) (*vm, netlab.Neighbor, error) {
	c := l.net.Client
	if err := c.Ping(ctx, l.vip, 2*time.Second); err != nil {
		return nil, netlab.Neighbor{}, err
	}
	nb, err := c.Neigh(ctx, l.vip)
	if err != nil {
		return nil, nb, err
	}
	if nb.MAC == nil {
		return nil, nb, fmt.Errorf("client has no neighbour entry for %s (state %q)", l.vip, nb.State)
	}
	v := l.nodeByMAC(nb.MAC)
	if v == nil {
		return nil, nb, fmt.Errorf("%s resolved to %s, which is no node's MAC", l.vip, nb.MAC)
	}
	return v, nb, nil
}

func (l *Lab) reachVIP(ctx context.Context) error {
	c := l.net.Client
	var out string
	if err := poll(ctx, 30*time.Second, "client pings "+l.vip.String(), func(ctx context.Context) error {
		var err error
		out, err = c.Run(ctx, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", l.vip.String())
		return err
	}); err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		l.p.say("client$ %s", line)
	}
	v, nb, err := l.answering(ctx)
	if err != nil {
		return err
	}
	l.p.say("client$ ip neigh show %s -> %s %s", l.vip, nb.MAC, nb.State)
	l.p.say("%s answered: MAC %s is %s, Proxmox VM %d on %s", l.vip, nb.MAC, v.host.Name, v.vmid, v.pveHost)
	ev, err := l.announcingEvent(ctx, v.host.Name, time.Time{})
	if err != nil {
		return err
	}
	l.p.say("kubectl describe service %s: Normal  Announcing  %s", serviceName, ev)
	return nil
}

// announcingEvent waits for the announcer's Event on the Service that names
// node as the one answering for the VIP (newer than after, when set).
func (l *Lab) announcingEvent(ctx context.Context, node string, after time.Time) (string, error) {
	var msg string
	err := poll(ctx, 20*time.Second, "Announcing event for "+node, func(ctx context.Context) error {
		evs, err := l.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + serviceName})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			last := e.LastTimestamp.Time
			if last.IsZero() {
				last = e.EventTime.Time
			}
			if e.Reason == "Announcing" && strings.Contains(e.Message, "Node "+node+" ") &&
				strings.Contains(e.Message, l.vip.String()) && !last.Before(after.Truncate(time.Second)) {
				msg = e.Message
				return nil
			}
		}
		return fmt.Errorf("%d events, none from %s", len(evs.Items), node)
	})
	return msg, err
}

func (l *Lab) failover(ctx context.Context) error {
	old, _, err := l.answering(ctx)
	if err != nil {
		return err
	}
	conn, err := l.net.Client.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("opening an ICMP socket in the client namespace: %w", err)
	}
	defer conn.Close()
	pg := newPinger(conn, l.vip)
	pctx, stopPing := context.WithCancel(ctx)
	defer stopPing()
	type result struct {
		rec pingRecord
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		rec, err := pg.run(pctx, 10*time.Millisecond)
		done <- result{rec, err}
	}()
	if err := poll(ctx, 5*time.Second, "pings answered before the fault", func(context.Context) error {
		if !pg.receivedAfter(start) {
			return errors.New("no reply yet")
		}
		return nil
	}); err != nil {
		stopPing()
		<-done
		return err
	}
	time.Sleep(300 * time.Millisecond)
	l.p.say("%s answers for %s; pulling its cable (its bridge port leaves vmbr0)", old.host.Name, l.vip)
	fault := time.Now()
	if err := old.host.CutLink(); err != nil {
		stopPing()
		<-done
		return err
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = old.host.RestoreLink()
		}
	}
	defer restore()
	werr := poll(ctx, 15*time.Second, "the VIP answers again", func(context.Context) error {
		if !pg.receivedAfter(fault) {
			return errors.New("no reply since the cut")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	stopPing()
	r := <-done
	if werr != nil {
		return fmt.Errorf("%w (the client sent %d pings)", werr, len(r.rec.Sent))
	}
	if r.err != nil {
		return r.err
	}
	o, err := analyzeOutage(r.rec, fault)
	if err != nil {
		return err
	}
	nb, err := l.net.Client.Neigh(ctx, l.vip)
	if err != nil {
		return err
	}
	now := l.nodeByMAC(nb.MAC)
	if now == nil || now == old {
		return fmt.Errorf("after the cut the client resolves %s to %s, not to another node", l.vip, nb.MAC)
	}
	l.p.say("%s took over: the client's neighbour entry for %s is now %s (%s, VM %d on %s)",
		now.host.Name, l.vip, nb.MAC, now.host.Name, now.vmid, now.pveHost)
	l.p.say("failover measured by the client: %s without a reply (%d of %d pings lost); first reply %s after the cut",
		o.Gap.Round(time.Millisecond), o.Lost, o.Sent, o.Recovered.Round(time.Millisecond))
	if ev, err := l.announcingEvent(ctx, now.host.Name, fault); err == nil {
		l.p.say("kubectl describe service %s: Normal  Announcing  %s", serviceName, ev)
	} else {
		l.p.say("(no Announcing event from %s yet: %v)", now.host.Name, err)
	}
	restore()
	l.p.say("%s's cable is back; the announcers agree again on one node per VIP", old.host.Name)
	return nil
}

func (l *Lab) exposeAPI(context.Context) error {
	port := l.opts.HostAPIPort
	target := net.JoinHostPort(l.ctl.IPv4.Addr().String(), "6443")
	var f *forwarder
	var err error
	if port == 0 {
		if f, err = newForwarder("127.0.0.1:6443", target, l.ctl.DialContext); err != nil {
			f, err = newForwarder("127.0.0.1:0", target, l.ctl.DialContext)
		}
	} else {
		f, err = newForwarder(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), target, l.ctl.DialContext)
	}
	if err != nil {
		return fmt.Errorf("forwarding the apiserver to loopback: %w", err)
	}
	l.fwd = f
	l.onTeardown(f.Close)
	cfg, err := clientcmd.LoadFromFile(l.cp.Kubeconfig)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + f.Addr()
	}
	cfg.Contexts = map[string]*clientcmdapi.Context{"pvelb-lab": {Cluster: firstKey(cfg.Clusters), AuthInfo: firstKey(cfg.AuthInfos)}}
	cfg.CurrentContext = "pvelb-lab"
	l.hostKC = filepath.Join(l.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, l.hostKC); err != nil {
		return err
	}
	// Prove the host kubeconfig works before telling anyone to use it.
	rc, err := clientcmd.BuildConfigFromFlags("", l.hostKC)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if _, err := kc.CoreV1().Services("default").Get(context.Background(), serviceName, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the forwarded apiserver at %s does not answer: %w", f.Addr(), err)
	}
	l.p.say("the apiserver (%s in namespace %s) is forwarded to %s on the host; kubeconfig: %s", target, l.ctl.Netns, f.Addr(), l.hostKC)
	return nil
}

func firstKey[V any](m map[string]V) string {
	for k := range m {
		return k
	}
	return ""
}

func (l *Lab) printAccess() {
	p := l.p
	p.plain("\nThe lab is running. Explore it with kubectl (any recent kubectl; Debian 12 does not package it:")
	p.plain("https://kubernetes.io/docs/tasks/tools/ or `go install k8s.io/kubernetes/cmd/kubectl`):")
	p.plain("")
	if l.hostKC == "" {
		p.plain("  (the loopback forwarder did not start: use kubectl inside the lab network, below)")
	}
	p.plain("  export KUBECONFIG=%s", l.hostKC)
	p.plain("  kubectl get nodes -L topology.kubernetes.io/zone")
	p.plain("  kubectl get service %s; kubectl describe service %s", serviceName, serviceName)
	p.plain("  kubectl get ippools.pvelb.io %s -o yaml", poolName)
	p.plain("")
	p.plain("Inside the lab network (the apiserver listens on %s in namespace %s):", l.ctl.IPv4.Addr(), l.ctl.Netns)
	p.plain("  ip netns exec %s kubectl --kubeconfig %s get nodes", l.ctl.Netns, l.cp.Kubeconfig)
	p.plain("  ip netns exec %s ping %s          # the client", l.net.Client.Netns, l.vip)
	p.plain("  ip netns exec %s ip neigh          # which MAC answers", l.net.Client.Netns)
	p.plain("Logs: %s/*.log", l.dir)
}

// fatal marks a poll condition error that no retry can fix (a process died).
type fatal struct{ err error }

func (f *fatal) Error() string { return f.err.Error() }
func (f *fatal) Unwrap() error { return f.err }

// poll runs cond every 100 ms until it succeeds, returns a *fatal error, or
// timeout passes; the error names what was awaited and cond's last error.
func poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = cond(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		var f *fatal
		if errors.As(last, &f) {
			return f.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not after %s: %w", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
