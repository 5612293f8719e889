package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/pvelb/pvelb/test/netlab"
)

// DefaultPodPort is where a pod's HTTP server listens unless told otherwise.
const DefaultPodPort = 8080

// podImage names no real image: nothing pulls or runs it, the Pod spec
// only needs one to pass validation.
const podImage = "pvelb.invalid/lab-netns-http:none"

// PodOptions shape one backend pod.
type PodOptions struct {
	Name      string
	Namespace string // default "default"
	Node      string // a node added to the Network
	Labels    map[string]string
	// Port is the container port the HTTP server listens on (both
	// families); DefaultPodPort when zero. It is named "http" in the spec.
	Port int
	// NotReady writes the status with Ready=False, as a kubelet does while a
	// readiness probe fails; SetReady changes it later.
	NotReady bool
}

// Pod is a backend: a namespace behind its node serving HTTP, and its Pod
// object.
type Pod struct {
	Name      string
	Namespace string
	Node      *Node
	Netns     string
	IPv4      netip.Addr
	IPv6      netip.Addr
	Port      int

	net     *Network
	index   int // host part in the node's blocks
	srv     *http.Server
	served  chan struct{}
	mu      sync.Mutex
	removed bool
}

// AddPod creates a pod on a node: its namespace and veth, its HTTP server,
// its Pod object (bound to the node through spec.nodeName, as the scheduler
// would) and then its status as the kubelet writes it once the container
// runs. The server answers every request with one line:
// "pod=<name> node=<node> from=<client address as the pod sees it>".
func (n *Network) AddPod(ctx context.Context, o PodOptions) (_ *Pod, err error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Port == 0 {
		o.Port = DefaultPodPort
	}
	node := n.Node(o.Node)
	if node == nil {
		return nil, fmt.Errorf("datapath: pod %s: node %q was not added to the network", o.Name, o.Node)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("datapath: network closed")
	}
	index := 0
	for i := 2; i < 2+MaxPodsPerNode; i++ {
		if !node.used[i] {
			index = i
			break
		}
	}
	if index == 0 {
		n.mu.Unlock()
		return nil, fmt.Errorf("datapath: node %s holds %d pods already", node.Name, MaxPodsPerNode)
	}
	node.used[index] = true
	n.podSeq++
	p := &Pod{
		Name: o.Name, Namespace: o.Namespace, Node: node,
		Netns: fmt.Sprintf("%s-p%d", n.lab.ID, n.podSeq),
		IPv4:  nth(node.PodCIDR4, index), IPv6: nth(node.PodCIDR6, index),
		Port: o.Port, net: n, index: index, served: make(chan struct{}),
	}
	veth := "vp" + strconv.Itoa(n.podSeq)
	n.pods = append(n.pods, p)
	n.mu.Unlock()
	defer func() {
		if err != nil {
			_ = p.teardown()
		}
	}()

	if err := p.plumb(veth); err != nil {
		return nil, err
	}
	if err := p.serve(); err != nil {
		return nil, err
	}
	if err := n.createPodObject(ctx, p, o); err != nil {
		return nil, fmt.Errorf("datapath: Pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	if err := p.writeStatus(ctx, !o.NotReady); err != nil {
		return nil, fmt.Errorf("datapath: Pod %s/%s status: %w", p.Namespace, p.Name, err)
	}
	return p, nil
}

// plumb makes the pod's namespace and joins it to its node, like the ptp
// CNI plugin: the pod holds its /32 and /128 with a default route to the
// node's gateway address, which sits on the node's end of the veth (the same
// address on every pod's veth), and the node routes the pod's addresses to
// that veth.
func (p *Pod) plumb(veth string) error {
	node := p.Node
	if out, err := exec.Command("ip", "netns", "add", p.Netns).CombinedOutput(); err != nil {
		return fmt.Errorf("datapath: pod %s: ip netns add %s: %w: %s", p.Name, p.Netns, err, strings.TrimSpace(string(out)))
	}
	// Created inside the pod namespace with the peer moved straight into
	// the node's: the host's namespace never holds either end.
	if _, err := runIP(p.Netns, "link add eth0 type veth peer name "+veth+" netns "+node.Host.Netns); err != nil {
		return fmt.Errorf("datapath: pod %s: %w", p.Name, err)
	}
	// nodad: the addresses are unique by construction, and DAD would hold
	// the IPv6 ones tentative for a second or more.
	if _, err := runIP(node.Host.Netns,
		"addr add "+node.Gateway4.String()+"/32 dev "+veth,
		"addr add "+node.Gateway6.String()+"/128 dev "+veth+" nodad",
		"link set "+veth+" up",
		"route replace "+p.IPv4.String()+"/32 dev "+veth,
		"route replace "+p.IPv6.String()+"/128 dev "+veth,
	); err != nil {
		return fmt.Errorf("datapath: pod %s on %s: %w", p.Name, node.Name, err)
	}
	if _, err := runIP(p.Netns,
		"link set lo up",
		"addr add "+p.IPv4.String()+"/32 dev eth0",
		"addr add "+p.IPv6.String()+"/128 dev eth0 nodad",
		"link set eth0 up",
		// onlink: the gateway is in no prefix the pod holds.
		"route add default via "+node.Gateway4.String()+" dev eth0 onlink",
		"route add default via "+node.Gateway6.String()+" dev eth0 onlink",
	); err != nil {
		return fmt.Errorf("datapath: pod %s: %w", p.Name, err)
	}
	return nil
}

// serve listens inside the pod's namespace from the test process: the
// socket stays there, so no binary runs in the pod.
func (p *Pod) serve() error {
	var ln net.Listener
	if err := netlab.InNetns(p.Netns, func() error {
		var err error
		// One socket for both families (IPV6_V6ONLY off), as most servers.
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(p.Port))
		return err
	}); err != nil {
		return fmt.Errorf("datapath: pod %s: listen: %w", p.Name, err)
	}
	answer := "pod=" + p.Name + " node=" + p.Node.Name
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			from, _, _ := net.SplitHostPort(r.RemoteAddr)
			if a, err := netip.ParseAddr(from); err == nil {
				from = a.Unmap().String()
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = fmt.Fprintf(w, "%s from=%s\n", answer, from)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = p.srv.Serve(ln); close(p.served) }()
	return nil
}

func (n *Network) createPodObject(ctx context.Context, p *Pod, o PodOptions) error {
	kube := n.opts.Client
	// The ServiceAccount admission plugin refuses Pods until the namespace's
	// "default" ServiceAccount exists; kube-controller-manager's
	// serviceaccount-controller creates it shortly after the namespace.
	if err := waitFor(ctx, 60*time.Second, func() error {
		_, err := kube.CoreV1().ServiceAccounts(p.Namespace).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("ServiceAccount %s/default (is kube-controller-manager's serviceaccount-controller running?): %w", p.Namespace, err)
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: o.Labels},
		Spec: corev1.PodSpec{
			NodeName: p.Node.Name,
			Containers: []corev1.Container{{
				Name: "http", Image: podImage,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(p.Port), Protocol: corev1.ProtocolTCP}},
			}},
			// No kubelet mounts a token here.
			AutomountServiceAccountToken: ptr.To(false),
		},
	}
	_, err := kube.CoreV1().Pods(p.Namespace).Create(ctx, obj, metav1.CreateOptions{})
	return err
}

// writeStatus writes what a kubelet reports once the pod's sandbox and
// container run: phase Running, the pod and host addresses, the container
// started, and Ready/ContainersReady as the readiness probe says.
func (p *Pod) writeStatus(ctx context.Context, ready bool) error {
	kube := p.net.opts.Client
	cur, err := kube.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	st := &cur.Status
	st.Phase = corev1.PodRunning
	st.HostIP = p.Node.Host.IPv4.Addr().String()
	st.HostIPs = []corev1.HostIP{{IP: st.HostIP}, {IP: p.Node.Host.IPv6.Addr().String()}}
	st.PodIP = p.IPv4.String()
	st.PodIPs = []corev1.PodIP{{IP: st.PodIP}, {IP: p.IPv6.String()}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	for _, c := range []struct {
		t corev1.PodConditionType
		s corev1.ConditionStatus
	}{
		{corev1.PodReadyToStartContainers, corev1.ConditionTrue},
		{corev1.PodInitialized, corev1.ConditionTrue},
		{corev1.ContainersReady, readyStatus},
		{corev1.PodReady, readyStatus},
		{corev1.PodScheduled, corev1.ConditionTrue},
	} {
		setCondition(st, c.t, c.s, now)
	}
	started := st.StartTime
	st.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "http", Image: podImage, ImageID: podImage,
		ContainerID: "netns://" + p.Netns,
		Ready:       ready, Started: ptr.To(true),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *started}},
	}}
	_, err = kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}

// setCondition changes a condition's status, moving its transition time only
// when the status changes (as the kubelet does; the endpointslice controller
// does not care, people reading `kubectl describe` do).
func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, now metav1.Time) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status != s {
				st.Conditions[i].Status = s
				st.Conditions[i].LastTransitionTime = now
			}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
}

// SetReady writes the pod's readiness as a kubelet does when its readiness
// probe starts or stops passing; the server keeps answering either way, so
// a test sees whether traffic still reaches a pod it should not.
func (p *Pod) SetReady(ctx context.Context, ready bool) error {
	if err := p.writeStatus(ctx, ready); err != nil {
		return fmt.Errorf("datapath: Pod %s/%s status: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// Delete removes the pod the way a kubelet finishes it: the Pod object is
// deleted at once (grace period 0: no kubelet would confirm a graceful
// one), then the server stops and the namespace and veth go.
func (p *Pod) Delete(ctx context.Context) error {
	err := p.net.opts.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if apierrors.IsNotFound(err) {
		err = nil
	}
	return errors.Join(err, p.teardown())
}

// teardown stops the server and removes the namespace; the node's end of
// the veth, its gateway address and the pod's routes go with it.
func (p *Pod) teardown() error {
	p.mu.Lock()
	if p.removed {
		p.mu.Unlock()
		return nil
	}
	p.removed = true
	p.mu.Unlock()
	// Every socket must be closed first: an open one keeps the namespace,
	// and with it the veth, alive after `ip netns del`.
	if p.srv != nil {
		_ = p.srv.Close()
		<-p.served
	}
	var err error
	if out, e := exec.Command("ip", "netns", "del", p.Netns).CombinedOutput(); e != nil && !strings.Contains(string(out), "No such file") {
		err = fmt.Errorf("datapath: pod %s: ip netns del %s: %w: %s", p.Name, p.Netns, e, strings.TrimSpace(string(out)))
	}
	p.net.mu.Lock()
	delete(p.Node.used, p.index)
	p.net.mu.Unlock()
	return err
}

// waitFor retries fn until it succeeds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
