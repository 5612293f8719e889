package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// The cluster side of announcing: an announcer Pod, ready and able to send
// ARP, on every Node, and kube-proxy not answering ARP for the VIPs itself.

const (
	announcerNamespace = "pvelb-system"
	announcerName      = "pvelb-announcer"
	// AnnouncersArea and KubeProxyArea group these findings.
	AnnouncersArea = "announcer pods"
	KubeProxyArea  = "kube-proxy"
)

// CheckCluster reads the announcer DaemonSet and Pods and kube-proxy's
// configuration and adds their findings.
func CheckCluster(ctx context.Context, kube kubernetes.Interface, nodes []corev1.Node, r *Report) {
	ds, err := kube.AppsV1().DaemonSets(announcerNamespace).Get(ctx, announcerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// Announcers run outside Kubernetes (pvelbctl lab does): the
		// membership check reads them on each Node, and warns for every
		// Node where none answers.
		r.add(OK, AnnouncersArea, "",
			"no DaemonSet %s/%s: announcers are not run by Kubernetes here (the membership check reads each Node's)", announcerNamespace, announcerName)
	case err != nil:
		r.add(Warn, AnnouncersArea, "", "reading DaemonSet %s/%s: %v", announcerNamespace, announcerName, err)
	default:
		pods, err := kube.CoreV1().Pods(announcerNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: metav1.FormatLabelSelector(ds.Spec.Selector)})
		if err != nil {
			r.add(Warn, AnnouncersArea, "", "listing announcer Pods: %v", err)
		} else {
			r.Findings = append(r.Findings, AssessAnnouncers(ds, pods.Items, nodes)...)
		}
	}

	kp, err := kube.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.add(OK, KubeProxyArea, "", "no DaemonSet kube-system/kube-proxy: nothing to check (kube-proxy replaced, e.g. by Cilium, or not run by Kubernetes)")
		return
	case err != nil:
		r.add(Warn, KubeProxyArea, "", "reading DaemonSet kube-system/kube-proxy: %v", err)
		return
	}
	var config string
	if cm, err := kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{}); err == nil {
		config = cm.Data["config.conf"]
	}
	r.Findings = append(r.Findings, AssessKubeProxy(kp, config)...)
}

// AssessAnnouncers checks the announcer DaemonSet's NET_RAW capability and
// that every Node runs a ready announcer Pod.
func AssessAnnouncers(ds *appsv1.DaemonSet, pods []corev1.Pod, nodes []corev1.Node) []Finding {
	var out []Finding
	add := func(sev Severity, fix, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Area: AnnouncersArea, Message: fmt.Sprintf(format, args...), Fix: fix})
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name != announcerName {
			continue
		}
		var caps []corev1.Capability
		privileged := false
		if sc := c.SecurityContext; sc != nil {
			if sc.Capabilities != nil {
				caps = sc.Capabilities.Add
			}
			privileged = sc.Privileged != nil && *sc.Privileged
		}
		if !privileged && !slices.Contains(caps, "NET_RAW") && !slices.Contains(caps, "CAP_NET_RAW") && !slices.Contains(caps, "ALL") {
			add(Fail, `kubectl -n pvelb-system patch ds pvelb-announcer --type=json -p '[{"op":"add","path":"/spec/template/spec/containers/0/securityContext/capabilities/add/-","value":"NET_RAW"}]'`,
				"container %s lacks the NET_RAW capability (adds %v): it cannot send ARP or NDP answers", c.Name, caps)
		}
	}
	byNode := map[string]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			byNode[p.Spec.NodeName] = p
		}
	}
	ready := 0
	for _, n := range nodes {
		p := byNode[n.Name]
		if p == nil {
			add(Fail, "kubectl -n pvelb-system describe ds pvelb-announcer (the namespace must allow privileged Pods: kubectl label namespace pvelb-system pod-security.kubernetes.io/enforce=privileged)",
				"node %s runs no announcer Pod: it never answers for a VIP", n.Name)
			continue
		}
		if why := notReady(p); why != "" {
			add(Fail, "kubectl -n pvelb-system logs "+p.Name+" (and describe pod "+p.Name+")",
				"node %s: announcer Pod %s is not ready (%s): it does not answer for VIPs", n.Name, p.Name, why)
			continue
		}
		ready++
	}
	if ready == len(nodes) && len(nodes) > 0 {
		add(OK, "", "a ready announcer on each of the %d Nodes", ready)
	}
	return out
}

// notReady says why a Pod is not ready, or "" when it is.
func notReady(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return ""
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
		if t := cs.State.Terminated; t != nil && t.Reason != "" {
			return t.Reason
		}
	}
	if p.Status.Phase != "" {
		return string(p.Status.Phase)
	}
	return "no Ready condition"
}

// kubeProxyConfig is the part of KubeProxyConfiguration doctor reads.
type kubeProxyConfig struct {
	Mode string `json:"mode"`
	IPVS struct {
		StrictARP bool `json:"strictARP"`
	} `json:"ipvs"`
}

// AssessKubeProxy reads kube-proxy's mode and IPVS strictARP from its
// container's flags (which win) and its configuration file (config.conf of
// ConfigMap kube-system/kube-proxy, as kubeadm writes it; Talos passes
// flags). In IPVS mode without strictARP every node answers ARP for every
// VIP (they sit on kube-ipvs0) and fights the elected announcer.
func AssessKubeProxy(ds *appsv1.DaemonSet, configConf string) []Finding {
	var cfg kubeProxyConfig
	if configConf != "" {
		_ = yaml.Unmarshal([]byte(configConf), &cfg)
	}
	mode, strict := cfg.Mode, cfg.IPVS.StrictARP
	for _, c := range ds.Spec.Template.Spec.Containers {
		args := append(slices.Clone(c.Command), c.Args...)
		for i, a := range args {
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !strings.HasPrefix(a, "--") {
				continue
			}
			if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && name != "ipvs-strict-arp" {
				val = args[i+1]
			}
			switch name {
			case "proxy-mode":
				mode = val
			case "ipvs-strict-arp":
				strict = !hasVal || val == "true"
			}
		}
	}
	f := Finding{Area: KubeProxyArea}
	switch {
	case mode == "ipvs" && !strict:
		f.Severity = Fail
		f.Message = "kube-proxy runs in IPVS mode without strictARP: every node answers ARP for every VIP and fights the elected announcer"
		f.Fix = "Talos: talosctl patch machineconfig --patch @manifests/talos/kube-proxy-ipvs-strictarp.yaml (cluster.proxy.extraArgs ipvs-strict-arp: \"true\")\n" +
			"kubeadm: kubectl -n kube-system edit configmap kube-proxy (ipvs: strictARP: true), then kubectl -n kube-system rollout restart ds kube-proxy"
	case mode == "ipvs":
		f.Message = "kube-proxy runs in IPVS mode with strictARP"
	default:
		if mode == "" {
			mode = "iptables (default)"
		}
		f.Message = "kube-proxy mode " + mode + ": it does not answer ARP for VIPs"
	}
	return []Finding{f}
}
