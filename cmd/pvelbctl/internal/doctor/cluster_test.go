package doctor

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/test/apiserver"
)

func TestAssessKubeProxy(t *testing.T) {
	ds := func(args ...string) *appsv1.DaemonSet {
		d := &appsv1.DaemonSet{}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "kube-proxy", Command: []string{"/usr/local/bin/kube-proxy"}, Args: args}}
		return d
	}
	for _, tc := range []struct {
		name   string
		ds     *appsv1.DaemonSet
		config string
		sev    Severity
		msg    string
	}{
		{"Talos default (iptables)", ds("--cluster-cidr=10.244.0.0/16"), "", OK, "mode iptables (default)"},
		{"Talos IPVS patch", ds("--proxy-mode=ipvs", "--ipvs-strict-arp=true"), "", OK, "IPVS mode with strictARP"},
		{"IPVS flag without strictARP", ds("--proxy-mode", "ipvs"), "", Fail, "without strictARP"},
		{"kubeadm config IPVS", ds("--config=/var/lib/kube-proxy/config.conf"), "mode: ipvs\nipvs:\n  strictARP: false\n", Fail, "without strictARP"},
		{"kubeadm config IPVS strict", ds("--config=/var/lib/kube-proxy/config.conf"), "mode: ipvs\nipvs:\n  strictARP: true\n", OK, "with strictARP"},
		{"flag overrides config", ds("--config=/c", "--ipvs-strict-arp"), "mode: ipvs\n", OK, "with strictARP"},
		{"nftables", ds("--proxy-mode=nftables"), "", OK, "mode nftables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := AssessKubeProxy(tc.ds, tc.config)
			if len(f) != 1 || f[0].Severity != tc.sev || !strings.Contains(f[0].Message, tc.msg) {
				t.Fatalf("findings %+v; want %v %q", f, tc.sev, tc.msg)
			}
			if tc.sev == Fail && !strings.Contains(f[0].Fix, "manifests/talos/kube-proxy-ipvs-strictarp.yaml") {
				t.Errorf("fix %q lacks the Talos patch", f[0].Fix)
			}
		})
	}
}

// TestCheckClusterAgainstAPIServer: the announcer DaemonSet, its Pods and
// kube-proxy's DaemonSet and ConfigMap as a real apiserver stores them,
// healthy and with each fault.
func TestCheckClusterAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	ctx := context.Background()
	cp := apiserver.StartT(t, apiserver.Options{})
	kube := cp.Client()
	for _, ns := range []string{"pvelb-system"} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No controller manager here makes the default ServiceAccount.
		if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	nodes := []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n3"}}}
	labels := map[string]string{"app.kubernetes.io/name": "pvelb-announcer"}
	container := func(caps ...corev1.Capability) corev1.Container {
		return corev1.Container{Name: "pvelb-announcer", Image: "ghcr.io/pvelb/pvelb",
			SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: caps}}}
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "pvelb-announcer", Namespace: "pvelb-system"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{container("NET_RAW")}},
			},
		},
	}
	if _, err := kube.AppsV1().DaemonSets("pvelb-system").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name, node string, ready bool, waiting string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "pvelb-system", Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{container("NET_RAW")}}}
		created, err := kube.CoreV1().Pods("pvelb-system").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		created.Status.Phase = corev1.PodRunning
		created.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
		if waiting != "" {
			created.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "pvelb-announcer", Image: "ghcr.io/pvelb/pvelb",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: waiting}}}}
		}
		if _, err := kube.CoreV1().Pods("pvelb-system").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod("ann-1", "n1", true, "")
	pod("ann-2", "n2", true, "")
	pod("ann-3", "n3", true, "")
	kp := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-proxy"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"k8s-app": "kube-proxy"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy",
					Command: []string{"/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"}}}},
			},
		},
	}
	if _, err := kube.AppsV1().DaemonSets("kube-system").Create(ctx, kp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system"},
		Data: map[string]string{"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: true\n"}}
	if _, err := kube.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	run := func() Report {
		var r Report
		CheckCluster(ctx, kube, nodes, &r)
		return r
	}
	r := run()
	if fails, warns := r.Problems(); fails+warns != 0 {
		t.Fatalf("healthy cluster: %+v", r.Findings)
	}
	if got := findings(r, OK, AnnouncersArea); len(got) != 1 || !strings.Contains(got[0], "each of the 3 Nodes") {
		t.Errorf("healthy announcers: %q", got)
	}

	// The faults: n2's announcer crashes, n3 has none, NET_RAW is gone, and
	// kube-proxy loses strictARP.
	if err := kube.CoreV1().Pods("pvelb-system").Delete(ctx, "ann-2", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if err := kube.CoreV1().Pods("pvelb-system").Delete(ctx, "ann-3", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	pod("ann-2b", "n2", false, "CrashLoopBackOff")
	ds, err := kube.AppsV1().DaemonSets("pvelb-system").Get(ctx, "pvelb-announcer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds.Spec.Template.Spec.Containers = []corev1.Container{container()}
	if _, err := kube.AppsV1().DaemonSets("pvelb-system").Update(ctx, ds, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm.Data["config.conf"] = "mode: ipvs\n"
	if _, err := kube.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r = run()
	fails := strings.Join(append(findings(r, Fail, AnnouncersArea), findings(r, Fail, KubeProxyArea)...), "\n")
	for _, want := range []string{
		"lacks the NET_RAW capability",
		"node n2: announcer Pod ann-2b is not ready (CrashLoopBackOff)",
		"node n3 runs no announcer Pod",
		"IPVS mode without strictARP",
	} {
		if !strings.Contains(fails, want) {
			t.Errorf("failures lack %q:\n%s", want, fails)
		}
	}
	if n, _ := r.Problems(); n != 4 {
		t.Errorf("%d failures, want 4:\n%s", n, fails)
	}
}
