package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/kubeapply"
)

// switchMetalLB is the MetalLB configuration the Services got their
// addresses from: an automatic pool and one for Services that name it.
const switchMetalLB = `
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec:
  addresses: ["203.0.113.0/27"]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: manual, namespace: metallb-system}
spec:
  addresses: ["203.0.113.64/28"]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: all, namespace: metallb-system}
`

// switchService is one Service as MetalLB left it.
type switchService struct {
	ns, name string
	ann      map[string]string
	port     int32
	ip, pool string // what MetalLB gave it
}

// TestSwitchFromMetalLBKeepsEveryAddress follows docs/install.md's
// "Switching from MetalLB / Cilium": Services hold addresses MetalLB gave
// them (status and annotation as MetalLB writes them, including shared
// addresses and addresses requested through MetalLB's annotations);
// `pvelbctl import metallb --apply` writes the pools; MetalLB is removed
// (its CRDs deleted, the Services untouched); pvelb-ccm starts. Sampling
// every Service throughout, no Service is ever seen without its address or
// with another, and no address is ever seen on two Services that did not
// share it; at the end pvelb has taken every address over (its
// allocated-pool annotation, the Proxmox IPSet) and a new Service gets a
// free address.
func TestSwitchFromMetalLBKeepsEveryAddress(t *testing.T) {
	l := lbLab(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ap, err := kubeapply.New(l.CP.Config)
	if err != nil {
		t.Fatal(err)
	}
	applyMetalLBCRDs(ctx, t, ap, moduleDir(t, metallbCRDModule))
	for _, ns := range []string{"metallb-system", "shop", "ops"} {
		l.createNamespace(t, ns)
	}
	cfg, err := kubeapply.Decode([]byte(switchMetalLB))
	if err != nil {
		t.Fatal(err)
	}
	if err := ap.Apply(ctx, cfg, false); err != nil {
		t.Fatal(err)
	}

	// The Services, and the addresses MetalLB gave them: the lowest free
	// address of lan in creation order, the requested ones, one address
	// for each sharing pair.
	var svcs []switchService
	next := 0
	auto := func(ns, name string, ann map[string]string) {
		svcs = append(svcs, switchService{ns: ns, name: name, ann: ann, port: 80, ip: fmt.Sprintf("203.0.113.%d", next), pool: "lan"})
		next++
	}
	for i := range 24 {
		auto([]string{"default", "shop", "ops"}[i%3], fmt.Sprintf("web-%d", i), nil)
	}
	shared := fmt.Sprintf("203.0.113.%d", next)
	next++
	svcs = append(svcs,
		switchService{ns: "shop", name: "dns-tcp", ann: map[string]string{"metallb.io/allow-shared-ip": "dns"}, port: 53, ip: shared, pool: "lan"},
		switchService{ns: "shop", name: "dns-udp", ann: map[string]string{"metallb.io/allow-shared-ip": "dns"}, port: 5353, ip: shared, pool: "lan"},
		switchService{ns: "default", name: "pinned", ann: map[string]string{"metallb.io/loadBalancerIPs": "203.0.113.30"}, port: 80, ip: "203.0.113.30", pool: "lan"},
		switchService{ns: "default", name: "pinned-old", ann: map[string]string{"metallb.universe.tf/loadBalancerIPs": "203.0.113.29"}, port: 80, ip: "203.0.113.29", pool: "lan"},
		switchService{ns: "ops", name: "manual-a", ann: map[string]string{"metallb.io/address-pool": "manual"}, port: 80, ip: "203.0.113.64", pool: "manual"},
		switchService{ns: "ops", name: "manual-b", ann: map[string]string{"metallb.universe.tf/address-pool": "manual", "metallb.universe.tf/allow-shared-ip": "m"}, port: 80, ip: "203.0.113.65", pool: "manual"},
	)
	holders := map[string][]string{} // address -> the Services that may show it
	for _, s := range svcs {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Annotations: s.ann},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app": s.name},
				Ports:    []corev1.ServicePort{{Name: "p", Port: s.port, Protocol: corev1.ProtocolTCP}},
			},
		}
		created, err := l.Client.CoreV1().Services(s.ns).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// As MetalLB's controller writes them: the pool in an annotation,
		// then the status with the address alone.
		if created.Annotations == nil {
			created.Annotations = map[string]string{}
		}
		created.Annotations["metallb.io/ip-allocated-from-pool"] = s.pool
		if created, err = l.Client.CoreV1().Services(s.ns).Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: s.ip}}
		if _, err := l.Client.CoreV1().Services(s.ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		holders[s.ip] = append(holders[s.ip], s.ns+"/"+s.name)
	}

	// Sample every Service from now until the end of the switch.
	var (
		mu         sync.Mutex
		violations []string
		samples    int
	)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	// Report what the samples saw also when a later step fails the test.
	defer func() {
		stopSampling()
		<-sampled
		mu.Lock()
		defer mu.Unlock()
		t.Logf("%d Services, %d addresses, %d samples of every Service during the switch", len(svcs), len(holders), samples)
		if samples < 10 {
			t.Errorf("only %d samples: the check saw too little of the switch", samples)
		}
		for _, v := range violations {
			t.Error(v)
		}
	}()
	go func() {
		defer close(sampled)
		for sampleCtx.Err() == nil {
			list, err := l.Client.CoreV1().Services("").List(sampleCtx, metav1.ListOptions{})
			if err == nil {
				bad := switchViolations(list.Items, svcs, holders)
				mu.Lock()
				samples++
				if len(bad) > 0 && len(violations) < 20 {
					violations = append(violations, fmt.Sprintf("sample %d: %s", samples, strings.Join(bad, "; ")))
				}
				mu.Unlock()
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	// The switch: import, remove MetalLB, start pvelb.
	out, err := exec.CommandContext(ctx, Binary(t, "pvelbctl"), "import", "metallb", "--apply", "--kubeconfig", l.CP.Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("pvelbctl import metallb --apply: %v\n%s", err, out)
	}
	for _, p := range []string{"lan", "manual"} {
		if !strings.Contains(string(out), "ippools.pvelb.io/"+p+" applied") {
			t.Fatalf("the import did not apply pool %s:\n%s", p, out)
		}
	}
	dyn := dynamic.NewForConfigOrDie(l.CP.Config)
	crdRes := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crds, err := dyn.Resource(crdRes).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crds.Items {
		if strings.HasSuffix(c.GetName(), ".metallb.io") {
			if err := dyn.Resource(crdRes).Delete(ctx, c.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	l.startCCM(t)
	l.waitNodesInitialised(t)

	// pvelb has taken every address over: its record on each Service, the
	// cluster IPSet admitting each address.
	Eventually(t, 60*time.Second, "pvelb records every Service's pool", func(ctx context.Context) error {
		for _, s := range svcs {
			got, err := l.Client.CoreV1().Services(s.ns).Get(ctx, s.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if v := got.Annotations["pvelb.io/allocated-pool"]; v != s.pool {
				return errorf("%s/%s: pvelb.io/allocated-pool %q, want %s", s.ns, s.name, v, s.pool)
			}
		}
		return nil
	})
	want := slices.Sorted(func(yield func(string) bool) {
		for ip := range holders {
			if !yield(ip) {
				return
			}
		}
	})
	Eventually(t, 60*time.Second, "every address admitted in the cluster IPSet", func(context.Context) error {
		ours, _ := l.setEntries(pve.ClusterScope, clusterSet)
		if !slices.Equal(ours, want) {
			return errorf("pvelb's entries %v, want %v", ours, want)
		}
		return nil
	})
	// Keep sampling a while after: a late re-sync must not move anything.
	time.Sleep(3 * time.Second)

	l.createService(t, "default", "after-switch")
	got := l.waitIPs(t, "default", "after-switch", 1)[0]
	if _, taken := holders[got]; taken {
		t.Errorf("a Service created after the switch got %s, which %v hold", got, holders[got])
	}
}

// switchViolations checks one sample: every Service shows exactly the
// address MetalLB gave it, and no address is on a Service that did not
// hold it before.
func switchViolations(items []corev1.Service, svcs []switchService, holders map[string][]string) []string {
	var bad []string
	byKey := map[string]corev1.Service{}
	seen := map[string][]string{}
	for _, s := range items {
		key := s.Namespace + "/" + s.Name
		byKey[key] = s
		for _, in := range s.Status.LoadBalancer.Ingress {
			seen[in.IP] = append(seen[in.IP], key)
		}
	}
	for _, s := range svcs {
		key := s.ns + "/" + s.name
		var ips []string
		for _, in := range byKey[key].Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		if !slices.Equal(ips, []string{s.ip}) {
			bad = append(bad, fmt.Sprintf("%s shows %v, not %s", key, ips, s.ip))
		}
	}
	for ip, keys := range seen {
		for _, k := range keys {
			if len(keys) > 1 && !slices.Contains(holders[ip], k) {
				sort.Strings(keys)
				bad = append(bad, fmt.Sprintf("%s is on %v at once", ip, keys))
				break
			}
		}
	}
	return bad
}
