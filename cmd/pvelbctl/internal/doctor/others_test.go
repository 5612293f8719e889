package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/test/apiserver"
)

type labelsSet = k8slabels.Set

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// foreignCRD is a minimal CRD for another project's kind: any spec.
func foreignCRD(group, version, kind, plural string, namespaced bool) *unstructured.Unstructured {
	scope := "Cluster"
	if namespaced {
		scope = "Namespaced"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": plural + "." + group},
		"spec": map[string]any{
			"group": group, "scope": scope,
			"names": map[string]any{"kind": kind, "plural": plural, "singular": strings.ToLower(kind), "listKind": kind + "List"},
			"versions": []any{map[string]any{"name": version, "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
}

func createAndWait(t *testing.T, dyn dynamic.Interface, crds []*unstructured.Unstructured, gvrs []schema.GroupVersionResource) {
	t.Helper()
	ctx := context.Background()
	for _, c := range crds {
		if _, err := dyn.Resource(crdGVR).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, gvr := range gvrs {
		for {
			_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not served: %v", gvr, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func obj(apiVersion, kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	md := map[string]any{"name": name}
	if ns != "" {
		md["namespace"] = ns
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": md, "spec": spec}}
}

// TestCheckOthersAgainstAPIServer: MetalLB's and Cilium's resources as a real
// apiserver serves them: none installed, installed and apart from pvelb's
// addresses, then a MetalLB pool and a Cilium pool overlapping a pvelb pool
// and a Cilium L2 policy selecting a Service with a pvelb VIP.
func TestCheckOthersAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	ctx := context.Background()
	cp := apiserver.StartT(t, apiserver.Options{})
	kube, dyn := cp.Client(), dynamic.NewForConfigOrDie(cp.Config)
	root, err := apiserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "manifests", "crds", "pvelb.io_ippools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ippoolCRD := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &ippoolCRD.Object); err != nil {
		t.Fatal(err)
	}
	createAndWait(t, dyn, []*unstructured.Unstructured{ippoolCRD}, []schema.GroupVersionResource{names.IPPools})
	if _, err := dyn.Resource(names.IPPools).Create(ctx, obj("pvelb.io/v1alpha1", "IPPool", "", "main",
		map[string]any{"addresses": []any{"192.0.2.200-192.0.2.220"}, "announce": map[string]any{"mode": "arp"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The BGPPeers the firewall check reads, with their defaults applied by
	// the apiserver (peerPort 179).
	data, err = os.ReadFile(filepath.Join(root, "manifests", "crds", "pvelb.io_bgppeers.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bgpCRD := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &bgpCRD.Object); err != nil {
		t.Fatal(err)
	}
	createAndWait(t, dyn, []*unstructured.Unstructured{bgpCRD}, []schema.GroupVersionResource{names.BGPPeers})
	if _, err := dyn.Resource(names.BGPPeers).Create(ctx, obj("pvelb.io/v1alpha1", "BGPPeer", "", "router",
		map[string]any{"peerAddress": "192.0.2.1", "peerASN": int64(64512), "myASN": int64(64512),
			"nodeSelector": map[string]any{"matchLabels": map[string]any{"bgp": "on"}}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readBGPSessions(ctx, dyn); len(got) != 1 || got[0].peer != "router" || got[0].port != 179 ||
		got[0].selector == nil || !got[0].selector.Matches(labelsSet{"bgp": "on"}) || got[0].selector.Matches(labelsSet{}) {
		t.Fatalf("BGP sessions read: %+v", got)
	}

	run := func() Report {
		var r Report
		CheckOthers(ctx, dyn, kube, &r)
		return r
	}
	if r := run(); len(r.Findings) != 0 {
		t.Fatalf("neither MetalLB nor Cilium installed: %+v; want nothing said", r.Findings)
	}

	createAndWait(t, dyn, []*unstructured.Unstructured{
		foreignCRD("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools", true),
		foreignCRD("cilium.io", "v2", "CiliumLoadBalancerIPPool", "ciliumloadbalancerippools", false),
		foreignCRD("cilium.io", "v2alpha1", "CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies", false),
	}, append([]schema.GroupVersionResource{metallbPools}, ciliumPools[0], ciliumL2[1]))
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	create := func(gvr schema.GroupVersionResource, u *unstructured.Unstructured) {
		t.Helper()
		if _, err := dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create(metallbPools, obj("metallb.io/v1beta1", "IPAddressPool", "metallb-system", "apart", map[string]any{"addresses": []any{"198.51.100.0/28"}}))
	create(ciliumPools[0], obj("cilium.io/v2", "CiliumLoadBalancerIPPool", "", "apart", map[string]any{"blocks": []any{map[string]any{"start": "203.0.113.10", "stop": "203.0.113.20"}}}))
	create(ciliumL2[1], obj("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy", "", "cilium-only",
		map[string]any{"loadBalancerIPs": true, "serviceSelector": map[string]any{"matchLabels": map[string]any{"lb": "cilium"}}}))
	// A Service with a pvelb VIP, not selected by the policy.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: map[string]string{"app": "web"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	created, err := kube.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.201"}}
	if _, err := kube.CoreV1().Services("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := run()
	if got := findings(r, OK, OthersArea); len(got) != 1 || !strings.Contains(got[0], "2 other pool(s) and 1 Cilium L2 policy(ies) leave pvelb's addresses alone") {
		t.Fatalf("installed and apart: %+v", r.Findings)
	}

	create(metallbPools, obj("metallb.io/v1beta1", "IPAddressPool", "metallb-system", "clash", map[string]any{"addresses": []any{"192.0.2.192/28"}}))
	create(ciliumPools[0], obj("cilium.io/v2", "CiliumLoadBalancerIPPool", "", "clash", map[string]any{"blocks": []any{map[string]any{"cidr": "192.0.2.220/32"}}}))
	create(ciliumL2[1], obj("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy", "", "everything", map[string]any{"loadBalancerIPs": true}))
	r = run()
	fails := strings.Join(findings(r, Fail, OthersArea), "\n")
	for _, want := range []string{
		"MetalLB IPAddressPool metallb-system/clash overlaps pvelb's pools: 192.0.2.200-192.0.2.220 (IPPool main) with 192.0.2.192-192.0.2.207",
		"CiliumLoadBalancerIPPool clash overlaps pvelb's pools",
		"CiliumL2AnnouncementPolicy everything selects Services whose VIPs pvelb announces: default/web (192.0.2.201)",
	} {
		if !strings.Contains(fails, want) {
			t.Errorf("failures lack %q:\n%s", want, fails)
		}
	}
	if n, _ := r.Problems(); n != 3 {
		t.Errorf("%d failures, want 3 (the apart pools and the narrow policy are fine):\n%s", n, fails)
	}
}
