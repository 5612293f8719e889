package e2e

import (
	"context"
	"fmt"
	"os"
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
	"k8s.io/apimachinery/pkg/types"
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

// switchCilium is the same for Cilium LB-IPAM: Cilium has no annotation
// naming a pool, so the manual pool selects its Services by label.
const switchCilium = `
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: lan}
spec:
  blocks: [{cidr: 203.0.113.0/27}]
  serviceSelector: {matchExpressions: [{key: pool, operator: DoesNotExist}]}
---
apiVersion: cilium.io/v2
kind: CiliumLoadBalancerIPPool
metadata: {name: manual}
spec:
  blocks: [{cidr: 203.0.113.64/28}]
  serviceSelector: {matchLabels: {pool: manual}}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: all}
spec: {loadBalancerIPs: true}
`

// switchService is one Service as the other load balancer left it.
type switchService struct {
	ns, name string
	ann      map[string]string
	labels   map[string]string
	port     int32
	ip, pool string // what the other load balancer gave it
}

// switchSource is a load balancer pvelb takes over from.
type switchSource struct {
	name   string
	crds   func(ctx context.Context, t *testing.T, ap *kubeapply.Applier)
	config string
	// ann are the annotations a Service uses to share an address, request
	// one (current and older form) and name a pool ("" when the source
	// has none).
	share, ips, ipsOld, pool string
	// written adds to a Service what the source's controller writes
	// besides the status address.
	written func(svc *corev1.Service, s switchService)
	// remove takes the source out of service the way docs/install.md says.
	remove func(ctx context.Context, t *testing.T, l *Lab)
}

var switchSources = []switchSource{
	{
		name: "metallb",
		crds: func(ctx context.Context, t *testing.T, ap *kubeapply.Applier) {
			applyMetalLBCRDs(ctx, t, ap, moduleDir(t, metallbCRDModule))
		},
		config: switchMetalLB,
		share:  "metallb.io/allow-shared-ip", ips: "metallb.io/loadBalancerIPs", ipsOld: "metallb.universe.tf/loadBalancerIPs", pool: "metallb.io/address-pool",
		written: func(svc *corev1.Service, s switchService) {
			svc.Annotations["metallb.io/ip-allocated-from-pool"] = s.pool
		},
		// Uninstalled: its controller stopped first, then its CRDs (and so
		// its pools) deleted.
		remove: func(ctx context.Context, t *testing.T, l *Lab) {
			deleteCRDs(ctx, t, l, ".metallb.io")
		},
	},
	{
		name: "cilium",
		crds: func(ctx context.Context, t *testing.T, ap *kubeapply.Applier) {
			applyCRDFile(ctx, t, ap, "testdata/cilium-crds.yaml")
		},
		config: switchCilium,
		share:  "lbipam.cilium.io/sharing-key", ips: "lbipam.cilium.io/ips", ipsOld: "io.cilium/lb-ipam-ips",
		written: func(svc *corev1.Service, s switchService) {
			svc.Status.Conditions = []metav1.Condition{{Type: "cilium.io/IPAMRequestSatisfied", Status: metav1.ConditionTrue,
				Reason: "satisfied", LastTransitionTime: metav1.Now()}}
		},
		// Every pool disabled: Cilium keeps existing allocations and
		// hands out no new address.
		remove: func(ctx context.Context, t *testing.T, l *Lab) {
			gvr := schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumloadbalancerippools"}
			dyn := dynamic.NewForConfigOrDie(l.CP.Config)
			for _, name := range []string{"lan", "manual"} {
				if _, err := dyn.Resource(gvr).Patch(ctx, name, types.MergePatchType, []byte(`{"spec":{"disabled":true}}`), metav1.PatchOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		},
	},
}

// TestSwitchKeepsEveryAddress follows docs/install.md's "Switching from
// MetalLB / Cilium", for each: Services hold addresses the other load
// balancer gave them (status, annotations and conditions as it writes
// them, shared addresses and addresses requested through its annotations
// among them); `pvelbctl import --apply` writes the pools; the other load
// balancer is taken out of service; pvelb-ccm starts. Sampling every
// Service throughout, no Service is ever seen without its address or with
// another, and no address is ever seen on two Services that did not share
// it; at the end pvelb has taken every address over (its allocated-pool
// annotation, the Proxmox IPSet) and a new Service gets a free address.
func TestSwitchKeepsEveryAddress(t *testing.T) {
	for _, src := range switchSources {
		t.Run(src.name, func(t *testing.T) { testSwitch(t, src) })
	}
}

func testSwitch(t *testing.T, src switchSource) {
	l := lbLab(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ap, err := kubeapply.New(l.CP.Config)
	if err != nil {
		t.Fatal(err)
	}
	src.crds(ctx, t, ap)
	for _, ns := range []string{"metallb-system", "shop", "ops"} {
		l.createNamespace(t, ns)
	}
	cfg, err := kubeapply.Decode([]byte(src.config))
	if err != nil {
		t.Fatal(err)
	}
	if err := ap.Apply(ctx, cfg, false); err != nil {
		t.Fatal(err)
	}

	// The Services, and the addresses the source gave them: the lowest
	// free address of lan in creation order, the requested ones, one
	// address for each sharing pair.
	var svcs []switchService
	next := 0
	for i := range 24 {
		svcs = append(svcs, switchService{ns: []string{"default", "shop", "ops"}[i%3], name: fmt.Sprintf("web-%d", i), port: 80, ip: fmt.Sprintf("203.0.113.%d", next), pool: "lan"})
		next++
	}
	shared := fmt.Sprintf("203.0.113.%d", next)
	manual := func(ann map[string]string) (map[string]string, map[string]string) {
		if src.pool == "" {
			return ann, map[string]string{"pool": "manual"}
		}
		ann[src.pool] = "manual"
		return ann, nil
	}
	manualA, labelsA := manual(map[string]string{})
	manualB, labelsB := manual(map[string]string{src.share: "m"})
	svcs = append(svcs,
		switchService{ns: "shop", name: "dns-tcp", ann: map[string]string{src.share: "dns"}, port: 53, ip: shared, pool: "lan"},
		switchService{ns: "shop", name: "dns-udp", ann: map[string]string{src.share: "dns"}, port: 5353, ip: shared, pool: "lan"},
		switchService{ns: "default", name: "pinned", ann: map[string]string{src.ips: "203.0.113.30"}, port: 80, ip: "203.0.113.30", pool: "lan"},
		switchService{ns: "default", name: "pinned-old", ann: map[string]string{src.ipsOld: "203.0.113.29"}, port: 80, ip: "203.0.113.29", pool: "lan"},
		switchService{ns: "ops", name: "manual-a", ann: manualA, labels: labelsA, port: 80, ip: "203.0.113.64", pool: "manual"},
		switchService{ns: "ops", name: "manual-b", ann: manualB, labels: labelsB, port: 80, ip: "203.0.113.65", pool: "manual"},
	)
	holders := map[string][]string{} // address -> the Services that may show it
	for _, s := range svcs {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Annotations: s.ann, Labels: s.labels},
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
		// As the source's controller writes them: its own marks, then
		// the status with the address alone.
		if created.Annotations == nil {
			created.Annotations = map[string]string{}
		}
		src.written(created, s)
		status := created.Status
		if created, err = l.Client.CoreV1().Services(s.ns).Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		created.Status = status
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

	// The switch: import, take the source out of service, start pvelb.
	out, err := exec.CommandContext(ctx, Binary(t, "pvelbctl"), "import", src.name, "--apply", "--kubeconfig", l.CP.Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("pvelbctl import %s --apply: %v\n%s", src.name, err, out)
	}
	if strings.Contains(string(out), "# Service/") {
		t.Errorf("the import says a Service would not keep its address:\n%s", out)
	}
	for _, p := range []string{"lan", "manual"} {
		if !strings.Contains(string(out), "ippools.pvelb.io/"+p+" applied") {
			t.Fatalf("the import did not apply pool %s:\n%s", p, out)
		}
	}
	src.remove(ctx, t, l)
	started := time.Now()
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
	t.Logf("pvelb-ccm recorded every Service's pool %s after it was started", time.Since(started).Round(10*time.Millisecond))
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

// deleteCRDs deletes every CRD whose name ends in suffix (and with them
// their objects).
func deleteCRDs(ctx context.Context, t *testing.T, l *Lab, suffix string) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(l.CP.Config)
	crds, err := dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crds.Items {
		if strings.HasSuffix(c.GetName(), suffix) {
			if err := dyn.Resource(crdGVR).Delete(ctx, c.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// applyCRDFile applies the CRDs of a YAML file and waits until they are
// established.
func applyCRDFile(ctx context.Context, t testing.TB, ap *kubeapply.Applier, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubeapply.Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, err := ap.ApplyCRDs(ctx, objs, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
