// Package lab is `pvelbctl lab`: the whole of pvelb running on one machine,
// for a person to watch and explore. A real kube-apiserver, etcd and
// kube-controller-manager, the Proxmox VE simulator with Proxmox's firewall
// emulated on the bridge (test/pvefw), pvelb-ccm, and per node
// pvelb-announcer and the real kube-proxy (test/datapath) run in network
// namespaces joined by a bridge (standing for Proxmox's vmbr0), with two pods
// and a client namespace that reaches the VIP through the kernel's own ARP.
// The lab then creates an IPPool and a Service and shows, step by step, what
// pvelb does: Nodes initialised from their VMs, the EXTERNAL-IP, the Proxmox
// IPSet entries, curl through the VIP answered by a pod, the drops while a
// VIP's entry is missing and its repair, and a failover with its measured
// time. Everything is torn down when the lab stops, also on error.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
	"github.com/pvelb/pvelb/test/pvefw"
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
	clusterIPSet = config.DefaultClusterIPSet
	poolName     = "demo"
	serviceName  = "web"
	ctlOctet     = 5
	pvePort      = 8006
	ccmPort      = 10258
	annPort      = 7948
	tokenID      = "pvelb@pve!ccm"
)

var (
	vmIPSet = pve.IPFilterSet(config.DefaultNIC)
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
	fw      *pvefw.Firewall
	dp      *datapath.Network
}

// Run builds the lab, runs the demo, then waits for ctx to end (unless
// ExitAfterDemo) and tears everything down. Setup failures are returned
// after the teardown.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	// The pod ranges hold datapath.MaxNodes nodes' blocks.
	if opts.Nodes < 2 || opts.Nodes > datapath.MaxNodes {
		return fmt.Errorf("--nodes: %d out of 2..%d (a failover needs a second node; the pod ranges hold %d nodes)", opts.Nodes, datapath.MaxNodes, datapath.MaxNodes)
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	l := &Lab{opts: opts, ann: map[string]*proc{}, p: &printer{w: opts.Out, start: time.Now(), total: 12}}
	if !opts.Failover {
		l.p.total--
	}
	if err := l.preflight(); err != nil {
		return err
	}
	defer l.teardown()

	l.p.plain("pvelb lab: a Kubernetes control plane, a Proxmox VE simulator, pvelb-ccm and %d announcer nodes", opts.Nodes)
	l.p.plain("in network namespaces on this machine. State and logs: %s", l.dir)
	type step struct {
		title string
		fn    func(context.Context) error
	}
	steps := []step{
		{"Network: a bridge standing for Proxmox's vmbr0 (192.0.2.0/24), node, client and control-plane namespaces", l.startNetwork},
		{"Kubernetes: kube-apiserver, etcd and kube-controller-manager in the control-plane namespace, pvelb CRDs", l.startControlPlane},
		{"Proxmox VE simulator and its firewall: VMs on two Proxmox hosts, their ipfilter-net0 IPSets seeded with their own addresses and pod CIDRs", l.startProxmox},
		{"pvelb-ccm, and Nodes registered as kubelets with --cloud-provider=external do", l.startCCMAndNodes},
		{"pvelb-announcer and kube-proxy (iptables mode) on every node", l.startAnnouncers},
		{"Two backend pods labelled app=web, as a Deployment's would be", l.startPods},
		{"IPPool and a LoadBalancer Service (kubectl create service loadbalancer web --tcp=80:8080)", l.createService},
		{"Proxmox firewall IPSets admitting the VIP", l.showIPSets},
		{"The client reaches the VIP: curl answered by a pod", l.reachVIP},
		{"A VIP missing from Proxmox's filter: a user deletes its entry; the ARP replies are dropped until pvelb repairs it", l.withheld},
	}
	if opts.Failover {
		steps = append(steps, step{"Failover: the announcing node loses its network (cable pulled); the client pings and sends an HTTP request every 10 ms", l.failover})
	}
	steps = append(steps, step{"kubectl access from the host", l.exposeAPI})

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
	// nft runs the emulated Proxmox firewall; kube-proxy runs iptables,
	// iptables-save and iptables-restore (and the ip6tables ones).
	for _, tool := range []string{"ip", "ping", "curl", "nft", "iptables", "ip6tables", "iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian: apt-get install iproute2 iputils-ping curl nftables iptables)", tool))
		}
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-proxy", "pvelb-ccm", "pvelb-announcer"} {
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
