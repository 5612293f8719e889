package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/test/datapath"
)

// startCCMAndNodes starts pvelb-ccm, registers the Nodes as kubelets would
// and waits until pvelb-ccm has initialised every one.
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
	return l.podNetwork(ctx)
}

// podNetwork gives every node its pod CIDRs and routes as a host-gateway
// CNI (flannel host-gw, the ptp plugin) would, for the pods and kube-proxy
// of the later steps.
func (l *Lab) podNetwork(ctx context.Context) error {
	dir := filepath.Join(l.dir, "datapath")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	dp, err := datapath.New(l.net, datapath.Options{Client: l.kube, Kubeconfig: l.cp.Kubeconfig, BinDir: l.opts.BinDir, Dir: dir})
	if err != nil {
		return err
	}
	l.dp = dp
	l.onTeardown(dp.Close)
	nodes, err := dp.AddNodes(ctx)
	if err != nil {
		return err
	}
	var cidrs []string
	for _, n := range nodes {
		cidrs = append(cidrs, fmt.Sprintf("%s %s", n.Name, n.PodCIDR4))
	}
	l.p.say("pod network (host-gateway CNI, routes between the nodes): %s", strings.Join(cidrs, ", "))
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
