// Package datapath gives a netlab lab the data path of a real cluster, so a
// client's packets to a LoadBalancer VIP reach a backend the way they do on
// Proxmox VMs running Kubernetes:
//
//   - pod networking like a host-gateway CNI (the ptp plugin, flannel
//     host-gw): each node gets a pod CIDR per family, written into
//     Node.spec.podCIDRs; a pod is a network namespace joined to its node by
//     a veth (the pod's /32 and /128 routed to the veth on the node, the
//     pod's default route via the node), and nodes route each other's pod
//     CIDRs via their lab addresses;
//   - pods whose Pod objects are created through the API and whose status
//     is then written as a kubelet would (Running, Ready, podIPs, hostIPs),
//     each serving HTTP from the test process on a socket opened inside the
//     pod's namespace, answering with the pod's and node's names;
//   - the real kube-proxy (test/tools, the same Kubernetes sources as the
//     apiserver) inside each node namespace, in iptables or nftables mode.
//
// EndpointSlices come from the real kube-controller-manager:
// apiserver.ControlPlane.StartControllerManager.
//
// IPVS mode cannot run here: the kernel has no ip_vs. Labs that stand for
// IPVS keep netlab's strictARP emulation (the VIP bound to kube-ipvs0).
//
// Only documentation addresses are used, and only inside the lab's
// namespaces: pods get 203.0.113.128/25 and 2001:db8:1::/64, since the test
// control plane's Service CIDR already holds 198.51.100.0/24 and the lab
// network 192.0.2.0/24. kube-proxy runs only under `ip netns exec` and is
// configured not to write the host-wide conntrack limits, so the host's
// namespace keeps its rules and sysctls.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/pvelb/pvelb/test/netlab"
)

// Pod address ranges of every lab, split into one block per node in the
// order nodes are added: node 1 gets 203.0.113.128/28 and 2001:db8:1:0:1::/80,
// node 2 203.0.113.144/28 and 2001:db8:1:0:2::/80, and so on.
var (
	PodCIDR4 = netip.MustParsePrefix("203.0.113.128/25")
	PodCIDR6 = netip.MustParsePrefix("2001:db8:1::/64")
)

const (
	nodeBits4 = 28 // 16 addresses: the node's gateway .1, pods .2-.14
	nodeBits6 = 80
	// MaxNodes is how many nodes the pod ranges have blocks for.
	MaxNodes = 1 << (nodeBits4 - 25)
	// MaxPodsPerNode leaves out a block's first address (the network),
	// its gateway and its last.
	MaxPodsPerNode = 1<<(32-nodeBits4) - 3
)

// ClusterCIDRs is the pod range of both families as kube-proxy's
// clusterCIDR takes it: traffic from outside it is external.
func ClusterCIDRs() string { return PodCIDR4.String() + "," + PodCIDR6.String() }

// NodePodCIDRs returns the pod blocks of the i-th node added (1-based).
func NodePodCIDRs(i int) (v4, v6 netip.Prefix, err error) {
	if i < 1 || i > MaxNodes {
		return v4, v6, fmt.Errorf("datapath: node %d out of 1..%d (the pod ranges hold %d /%d blocks)", i, MaxNodes, MaxNodes, nodeBits4)
	}
	a4 := PodCIDR4.Addr().As4()
	a4[3] += byte((i - 1) << (32 - nodeBits4))
	a6 := PodCIDR6.Addr().As16()
	// The block number sits in the fifth hextet (bits 64..79).
	a6[8], a6[9] = byte(i>>8), byte(i)
	return netip.PrefixFrom(netip.AddrFrom4(a4), nodeBits4), netip.PrefixFrom(netip.AddrFrom16(a6), nodeBits6), nil
}

// nth returns the n-th address of a block (0 is the block's own address).
func nth(p netip.Prefix, n int) netip.Addr {
	if p.Addr().Is4() {
		a := p.Addr().As4()
		a[3] += byte(n)
		return netip.AddrFrom4(a)
	}
	a := p.Addr().As16()
	a[14], a[15] = byte(n>>8), byte(n)
	return netip.AddrFrom16(a)
}

// Options shape a Network.
type Options struct {
	// Client is the test process's client of the lab's apiserver (its
	// rest.Config dialing through the lab, as annLab does).
	Client kubernetes.Interface
	// Kubeconfig is the file kube-proxy reads: the control plane's, whose
	// server address is reachable from the node namespaces.
	Kubeconfig string
	// BinDir holds kube-proxy; default from apiserver.EnsureBinaries.
	BinDir string
	// Dir holds kube-proxy's configs and logs; a new temporary directory
	// when empty (removed by Close).
	Dir string
	// Log, when set, receives kube-proxy's output lines besides its log
	// file, and teardown problems.
	Log io.Writer
}

// Network is the data path of one lab: nodes with pod CIDRs, pods and
// kube-proxies. Its methods may be called from several goroutines.
type Network struct {
	lab  *netlab.Lab
	opts Options
	dir  string
	own  bool

	mu      sync.Mutex
	nodes   []*Node
	pods    []*Pod
	proxies []*KubeProxy
	podSeq  int
	// proxySeq numbers kube-proxy starts, so a restarted one keeps its
	// predecessor's log.
	proxySeq int
	closed   bool
}

// Node is a lab node that carries pods.
type Node struct {
	Host     *netlab.Host
	Name     string
	PodCIDR4 netip.Prefix
	PodCIDR6 netip.Prefix
	// Gateway4 and Gateway6 are the node's address on every pod veth, the
	// pods' default gateway (one address on many veths, as the ptp CNI does).
	Gateway4 netip.Addr
	Gateway6 netip.Addr

	used map[int]bool // host parts of the block taken by pods
}

// New makes the data path of a lab. The caller owns it and must call Close
// (before the lab's Close, so pod namespaces go first).
func New(lab *netlab.Lab, opts Options) (*Network, error) {
	if opts.Client == nil || opts.Kubeconfig == "" {
		return nil, errors.New("datapath: Options.Client and Options.Kubeconfig are required")
	}
	n := &Network{lab: lab, opts: opts, dir: opts.Dir}
	if n.dir == "" {
		dir, err := os.MkdirTemp("", "pvelb-datapath-")
		if err != nil {
			return nil, err
		}
		n.dir, n.own = dir, true
	}
	return n, nil
}

// AddNode gives a lab node its pod blocks: forwarding on, routes to every
// other node's pods and theirs to this one's, and the Node object's
// spec.podCIDRs and InternalIP addresses (the Node is created when it does
// not exist yet, Ready as a registered kubelet leaves it; an existing one
// keeps its labels, annotations and conditions).
func (n *Network) AddNode(ctx context.Context, h *netlab.Host) (*Node, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("datapath: network closed")
	}
	for _, o := range n.nodes {
		if o.Name == h.Name {
			n.mu.Unlock()
			return o, nil
		}
	}
	v4, v6, err := NodePodCIDRs(len(n.nodes) + 1)
	if err != nil {
		n.mu.Unlock()
		return nil, err
	}
	node := &Node{
		Host: h, Name: h.Name, PodCIDR4: v4, PodCIDR6: v6,
		Gateway4: nth(v4, 1), Gateway6: nth(v6, 1), used: map[int]bool{},
	}
	others := slices.Clone(n.nodes)
	n.nodes = append(n.nodes, node)
	n.mu.Unlock()

	// Forwarding makes the namespace a router between the lab and its pods.
	// rp_filter loose (the kernel takes the larger of "all" and the
	// interface's value) so the path does not depend on what the host's
	// default leaves in new namespaces; strict would also work for these
	// routes, loose is what systemd-based node images set.
	if err := h.Sysctl(
		"net.ipv4.ip_forward=1",
		"net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.rp_filter=2",
	); err != nil {
		return nil, fmt.Errorf("datapath: node %s: %w", h.Name, err)
	}
	for _, o := range others {
		if err := routeVia(h, o); err != nil {
			return nil, err
		}
		if err := routeVia(o.Host, node); err != nil {
			return nil, err
		}
	}
	if err := n.ensureNodeObject(ctx, node); err != nil {
		return nil, fmt.Errorf("datapath: Node %s: %w", h.Name, err)
	}
	return node, nil
}

// AddNodes is AddNode for every node of the lab, in order.
func (n *Network) AddNodes(ctx context.Context) ([]*Node, error) {
	var out []*Node
	for _, h := range n.lab.Nodes {
		node, err := n.AddNode(ctx, h)
		if err != nil {
			return nil, err
		}
		out = append(out, node)
	}
	return out, nil
}

// routeVia sends from's traffic for to's pods to to's lab addresses, as a
// host-gateway CNI programs every node.
func routeVia(from *netlab.Host, to *Node) error {
	_, err := runIP(from.Netns,
		"route replace "+to.PodCIDR4.String()+" via "+to.Host.IPv4.Addr().String()+" dev "+from.Link,
		"route replace "+to.PodCIDR6.String()+" via "+to.Host.IPv6.Addr().String()+" dev "+from.Link,
	)
	if err != nil {
		return fmt.Errorf("datapath: routes from %s to %s's pods: %w", from.Name, to.Name, err)
	}
	return nil
}

func (n *Network) ensureNodeObject(ctx context.Context, node *Node) error {
	kube := n.opts.Client
	cidrs := []string{node.PodCIDR4.String(), node.PodCIDR6.String()}
	addrs := []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: node.Host.IPv4.Addr().String()},
		{Type: corev1.NodeInternalIP, Address: node.Host.IPv6.Addr().String()},
		{Type: corev1.NodeHostName, Address: node.Name},
	}
	_, err := kube.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: node.Name, Labels: map[string]string{
				corev1.LabelHostname: node.Name, corev1.LabelOSStable: "linux",
			}},
			Spec: corev1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs},
		}
		created, err := kube.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		created.Status.Addresses = addrs
		created.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "datapath lab node", LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		_, err = kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	// pvelb-ccm writes the same Node while it initialises it (providerID,
	// labels, pvelb.io/admitted): a conflict means re-read and redo.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := kube.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		// podCIDRs can be set once and never changed: a Node that already
		// has others belongs to a different addressing and cannot join.
		if len(cur.Spec.PodCIDRs) > 0 && !slices.Equal(cur.Spec.PodCIDRs, cidrs) {
			return fmt.Errorf("already has podCIDRs %v, want %v", cur.Spec.PodCIDRs, cidrs)
		}
		if len(cur.Spec.PodCIDRs) == 0 {
			cur.Spec.PodCIDR, cur.Spec.PodCIDRs = cidrs[0], cidrs
			if cur, err = kube.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		missing := false
		for _, a := range addrs {
			if !slices.Contains(cur.Status.Addresses, a) {
				cur.Status.Addresses = append(cur.Status.Addresses, a)
				missing = true
			}
		}
		if missing {
			_, err = kube.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		}
		return err
	})
}

// Node returns the node with that name, or nil.
func (n *Network) Node(name string) *Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range n.nodes {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Nodes returns the nodes added so far, in order.
func (n *Network) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.nodes)
}

// Close stops every kube-proxy and removes every pod (their namespaces and
// HTTP servers; not their API objects, which go with the control plane). It
// is safe to call more than once.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	proxies, pods := n.proxies, n.pods
	n.proxies, n.pods = nil, nil
	n.mu.Unlock()
	for _, p := range proxies {
		p.Stop()
	}
	for _, p := range pods {
		if err := p.teardown(); err != nil {
			n.logf("datapath: %v", err)
		}
	}
	if n.own {
		_ = os.RemoveAll(n.dir)
	}
}

func (n *Network) logf(format string, args ...any) {
	if n.opts.Log != nil {
		_, _ = fmt.Fprintf(n.opts.Log, format+"\n", args...)
	}
}

// runIP runs `ip` commands in one process inside a namespace.
func runIP(netns string, cmds ...string) (string, error) {
	cmd := exec.Command("ip", "-n", netns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s: %q: %w: %s", netns, cmds, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
