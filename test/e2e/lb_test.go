package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/provider/pve"
)

var ippoolGVR = schema.GroupVersionResource{Group: "pvelb.io", Version: "v1alpha1", Resource: "ippools"}

const (
	lbClass        = "pvelb.io/loadbalancer"
	lbFinalizer    = "service.kubernetes.io/load-balancer-cleanup"
	classFinalizer = "pvelb.io/load-balancer-cleanup"
	clusterSet     = "pvelb-vips"
	vmSet          = "ipfilter-net0"
	userClusterIP  = "192.0.2.250"
	userComment    = "ops: bastion"
	excludedNodeVM = 101 // talos-cp-1 carries exclude-from-external-load-balancers
)

// lbLab is a lab ready for LoadBalancer tests: CRDs applied, extra cloud
// config appended, each VM's ipfilter-net0 seeded with its own IP (as a user
// running the IP filter has it), a user entry in the cluster set, Nodes
// registered and the control-plane Node excluded from load balancers.
func lbLab(t *testing.T, extraConfig string) *Lab {
	t.Helper()
	l := newLab(t)
	f, err := os.OpenFile(l.ConfigFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(extraConfig); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	ApplyCRDs(t, l.CP)
	for _, vm := range labVMs {
		l.PVE.SeedIPSet(pve.VMScope(pve.VMRef{Node: vm.host, VMID: vm.vmid}), vmSet, pve.IPSetEntry{CIDR: vm.ip, Comment: "node address"})
	}
	l.PVE.SeedIPSet(pve.ClusterScope, clusterSet, pve.IPSetEntry{CIDR: userClusterIP, Comment: userComment})
	l.createNodes(t)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:""}}}`, corev1.LabelNodeExcludeBalancers)
	if _, err := l.Client.CoreV1().Nodes().Patch(context.Background(), "talos-cp-1", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *Lab) waitNodesInitialised(t *testing.T) {
	t.Helper()
	Eventually(t, 30*time.Second, "nodes initialised", func(ctx context.Context) error {
		list, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, n := range list.Items {
			if n.Spec.ProviderID == "" {
				return errorf("node %s has no providerID", n.Name)
			}
		}
		return nil
	})
}

func (l *Lab) createPool(t testing.TB, name string, spec map[string]any) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	if _, err := dynamic.NewForConfigOrDie(l.CP.Config).Resource(ippoolGVR).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating IPPool %s: %v", name, err)
	}
}

type svcOpt func(*corev1.Service)

func withAnn(k, v string) svcOpt {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}
func withClass(c string) svcOpt { return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &c } }
func withPort(p int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{{Name: "p", Port: p, TargetPort: intstr.FromInt32(p), Protocol: corev1.ProtocolTCP}}
	}
}
func dualStack(s *corev1.Service) {
	p := corev1.IPFamilyPolicyRequireDualStack
	s.Spec.IPFamilyPolicy = &p
	s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
}

func (l *Lab) createService(t *testing.T, ns, name string, opts ...svcOpt) {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	if _, err := l.Client.CoreV1().Services(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Service %s/%s: %v", ns, name, err)
	}
}

func (l *Lab) createNamespace(t *testing.T, name string) {
	t.Helper()
	if _, err := l.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ingress returns a Service's ingress IPs, checking every entry has ipMode VIP.
func ingress(s *corev1.Service) ([]string, error) {
	var ips []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
			return nil, errorf("%s/%s ingress %s has ipMode %v, want VIP", s.Namespace, s.Name, in.IP, in.IPMode)
		}
		ips = append(ips, in.IP)
	}
	return ips, nil
}

// waitIPs waits until the Service has n ingress IPs and returns them.
func (l *Lab) waitIPs(t *testing.T, ns, name string, n int) []string {
	t.Helper()
	var ips []string
	Eventually(t, 60*time.Second, fmt.Sprintf("%s/%s has %d address(es)", ns, name, n), func(ctx context.Context) error {
		s, err := l.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ips, err = ingress(s); err != nil {
			return err
		}
		if len(ips) != n {
			return errorf("ingress %v", ips)
		}
		return nil
	})
	return ips
}

// waitEvent waits for an Event on the Service with the reason whose message
// contains every one of subs.
func (l *Lab) waitEvent(t *testing.T, ns, name, reason string, subs ...string) {
	t.Helper()
	Eventually(t, 60*time.Second, fmt.Sprintf("event %s on %s/%s", reason, ns, name), func(ctx context.Context) error {
		list, err := l.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.name": name, "involvedObject.kind": "Service", "reason": reason}.AsSelector().String()})
		if err != nil {
			return err
		}
		var msgs []string
	next:
		for _, e := range list.Items {
			msgs = append(msgs, e.Message)
			for _, s := range subs {
				if !strings.Contains(e.Message, s) {
					continue next
				}
			}
			return nil
		}
		return errorf("no matching event; messages with that reason: %q", msgs)
	})
}

// pvelbEntries are the entries of a set pvelb wrote (comment "pvelb: ..."),
// sorted; others are user entries.
func (l *Lab) setEntries(scope pve.Scope, name string) (ours, users []string) {
	for _, e := range l.PVE.IPSetEntries(scope, name) {
		if strings.HasPrefix(e.Comment, "pvelb:") {
			ours = append(ours, e.CIDR)
		} else {
			users = append(users, e.CIDR+" "+e.Comment)
		}
	}
	sort.Strings(ours)
	sort.Strings(users)
	return ours, users
}

func vmScope(vm labVM) pve.Scope { return pve.VMScope(pve.VMRef{Node: vm.host, VMID: vm.vmid}) }

// snapshot maps "ns/name" to the ingress IPs of every Service with some.
func (l *Lab) snapshot(t *testing.T) map[string]string {
	t.Helper()
	list, err := l.Client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range list.Items {
		if ips, _ := ingress(&s); len(ips) > 0 {
			out[s.Namespace+"/"+s.Name] = strings.Join(ips, ",")
		}
	}
	return out
}

// TestLoadBalancer drives the pvelb-ccm binary with dozens of Services:
// plain, dual-stack, shared, requested, conflicting, class-less, pvelb-class
// and foreign-class; checks addresses are never handed out twice, the
// Proxmox IPSets follow, a restart moves nothing, a Proxmox outage keeps
// addresses and is reported, and deletes leave only the user's entries.
func TestLoadBalancer(t *testing.T) {
	l := lbLab(t, `firewall:
  resyncPeriod: 3s
`)
	l.createNamespace(t, "team")
	l.createPool(t, "main", map[string]any{
		"addresses": []any{"203.0.113.0/26", "2001:db8:1::/120"}, "avoidBuggyIPs": true})
	l.createPool(t, "reserved", map[string]any{"addresses": []any{"203.0.113.64/28"}, "autoAssign": false})
	l.createPool(t, "nowhere", map[string]any{"addresses": []any{"203.0.113.128/30"}, "autoAssign": false,
		"announce": map[string]any{"mode": "arp", "nodeSelector": map[string]any{"matchLabels": map[string]any{"pvelb.test/none": "x"}}}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)

	const plain, dual, class = 20, 4, 5
	for i := range plain {
		l.createService(t, "default", fmt.Sprintf("plain-%d", i))
	}
	for i := range dual {
		l.createService(t, "default", fmt.Sprintf("dual-%d", i), dualStack)
	}
	for i := range class {
		l.createService(t, "team", fmt.Sprintf("class-%d", i), withClass(lbClass))
	}
	l.createService(t, "default", "share-a", withAnn("pvelb.io/sharing-key", "web"), withPort(80))
	l.createService(t, "default", "share-b", withAnn("pvelb.io/sharing-key", "web"), withPort(443))
	l.createService(t, "default", "req-1", withAnn("pvelb.io/ips", "203.0.113.70"))
	l.createService(t, "default", "foreign", withClass("example.com/other"))
	l.createService(t, "default", "nowhere", withAnn("pvelb.io/pool", "nowhere"))

	for i := range plain {
		l.waitIPs(t, "default", fmt.Sprintf("plain-%d", i), 1)
	}
	for i := range dual {
		ips := l.waitIPs(t, "default", fmt.Sprintf("dual-%d", i), 2)
		if !strings.Contains(ips[0], ".") || !strings.HasPrefix(ips[1], "2001:db8:1::") {
			t.Errorf("dual-%d got %v, want IPv4 then IPv6 from main", i, ips)
		}
	}
	for i := range class {
		l.waitIPs(t, "team", fmt.Sprintf("class-%d", i), 1)
	}
	shareA := l.waitIPs(t, "default", "share-a", 1)
	if shareB := l.waitIPs(t, "default", "share-b", 1); shareB[0] != shareA[0] {
		t.Errorf("share-a %v and share-b %v: same sharing key and distinct ports must share", shareA, shareB)
	}
	if got := l.waitIPs(t, "default", "req-1", 1); got[0] != "203.0.113.70" {
		t.Errorf("req-1 got %v, want the requested 203.0.113.70", got)
	}
	nowhereIP := l.waitIPs(t, "default", "nowhere", 1)[0]
	if !slices.Contains([]string{"203.0.113.128", "203.0.113.129", "203.0.113.130", "203.0.113.131"}, nowhereIP) {
		t.Errorf("nowhere got %s, want one from pool nowhere", nowhereIP)
	}
	l.waitEvent(t, "default", "nowhere", "NoEligibleNode", "IPPool nowhere", "nodeSelector")

	// Conflicts, each refused with an Event that says why.
	l.createService(t, "default", "req-clash", withAnn("pvelb.io/ips", "203.0.113.70"))
	l.createService(t, "default", "req-outside", withAnn("pvelb.io/ips", "192.0.2.200"))
	l.createService(t, "default", "share-clash", withAnn("pvelb.io/sharing-key", "web"), withAnn("pvelb.io/ips", shareA[0]), withPort(80))
	l.createService(t, "team", "class-clash", withClass(lbClass), withAnn("pvelb.io/ips", "203.0.113.70"))
	l.waitEvent(t, "default", "req-clash", "AddressInUse", "default/req-1")
	l.waitEvent(t, "default", "req-outside", "AddressOutsidePools", "192.0.2.200")
	l.waitEvent(t, "default", "share-clash", "SharingRefused", "TCP/80")
	l.waitEvent(t, "team", "class-clash", "AddressInUse", "default/req-1")

	ctx := context.Background()
	svcs := l.Client.CoreV1().Services
	// Class Services carry pvelb's finalizer, not the service controller's;
	// the foreign one is untouched.
	for i := range class {
		s, err := svcs("team").Get(ctx, fmt.Sprintf("class-%d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Finalizers, []string{classFinalizer}) {
			t.Errorf("class-%d finalizers %v, want only %s", i, s.Finalizers, classFinalizer)
		}
	}
	Consistently(t, 3*time.Second, "foreign-class and conflicting Services get nothing", func(ctx context.Context) error {
		for _, name := range []string{"foreign", "req-clash", "req-outside", "share-clash"} {
			s, err := svcs("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(s.Status.LoadBalancer.Ingress) > 0 {
				return errorf("%s got %v", name, s.Status.LoadBalancer.Ingress)
			}
			if name == "foreign" && (len(s.Finalizers) > 0 || len(s.Annotations) > 0) {
				return errorf("foreign-class Service touched: finalizers %v annotations %v", s.Finalizers, s.Annotations)
			}
		}
		return nil
	})
	if s, _ := svcs("default").Get(ctx, "req-1", metav1.GetOptions{}); s.Annotations["pvelb.io/allocated-pool"] != "reserved" {
		t.Errorf("req-1 allocated-pool annotation %q, want reserved", s.Annotations["pvelb.io/allocated-pool"])
	}
	if s, _ := svcs("default").Get(ctx, "dual-0", metav1.GetOptions{}); s.Annotations["pvelb.io/allocated-pool"] != "main" {
		t.Errorf("dual-0 allocated-pool annotation %q, want main", s.Annotations["pvelb.io/allocated-pool"])
	}

	// No address is given twice, except within the sharing group.
	snap := l.snapshot(t)
	holders := map[string][]string{}
	for k, ips := range snap {
		for _, ip := range strings.Split(ips, ",") {
			holders[ip] = append(holders[ip], k)
		}
	}
	for ip, hs := range holders {
		sort.Strings(hs)
		if len(hs) > 1 && !slices.Equal(hs, []string{"default/share-a", "default/share-b"}) {
			t.Errorf("address %s given to %v", ip, hs)
		}
	}
	wantServices := plain + dual + class + 4 // share-a, share-b, req-1, nowhere
	if len(snap) != wantServices {
		t.Errorf("%d Services have addresses, want %d: %v", len(snap), wantServices, snap)
	}

	// Proxmox IPSets: every VIP in the cluster set; the VIPs each VM may
	// announce in its ipfilter set; user entries and the VMs' own addresses kept.
	allVIPs := slices.Sorted(maps.Keys(holders))
	announced := slices.DeleteFunc(slices.Clone(allVIPs), func(ip string) bool { return ip == nowhereIP })
	l.waitIPSets(t, allVIPs, announced)

	// The pools' status counts what is used.
	Eventually(t, 30*time.Second, "IPPool main status", func(ctx context.Context) error {
		p, err := dynamic.NewForConfigOrDie(l.CP.Config).Resource(ippoolGVR).Get(ctx, "main", metav1.GetOptions{})
		if err != nil {
			return err
		}
		v4used, _, _ := unstructured.NestedInt64(p.Object, "status", "ipv4", "used")
		v6used, _, _ := unstructured.NestedInt64(p.Object, "status", "ipv6", "used")
		// plain + share group + class use one IPv4 each, dual-stack one of each.
		if v4used != int64(plain+dual+class+1) || v6used != int64(dual) {
			return errorf("used v4 %d v6 %d, want %d and %d", v4used, v6used, plain+dual+class+1, dual)
		}
		conds, _, _ := unstructured.NestedSlice(p.Object, "status", "conditions")
		if !strings.Contains(fmt.Sprint(conds), "type:Ready") {
			return errorf("conditions %v", conds)
		}
		return nil
	})

	// A restart moves nothing, and the new leader hands out fresh addresses.
	ccm.Stop()
	l.startCCM(t)
	l.createService(t, "default", "after-restart")
	after := l.waitIPs(t, "default", "after-restart", 1)[0]
	if _, taken := holders[after]; taken {
		t.Errorf("after-restart got %s, already held by %v", after, holders[after])
	}
	Consistently(t, 3*time.Second, "addresses after restart", func(context.Context) error {
		now := l.snapshot(t)
		delete(now, "default/after-restart")
		if !maps.Equal(now, snap) {
			return errorf("addresses changed across restart:\nbefore %v\nafter  %v", snap, now)
		}
		return nil
	})

	// A Proxmox outage: the Service still gets its address and a Warning;
	// the IPSets converge once Proxmox is back.
	l.PVE.SetOutage(true)
	l.createService(t, "default", "during-outage")
	outageIP := l.waitIPs(t, "default", "during-outage", 1)[0]
	l.waitEvent(t, "default", "during-outage", "FirewallAdmissionFailed", "proxmox cluster \"lab\"", "503")
	l.PVE.SetOutage(false)
	allVIPs = append(allVIPs, after, outageIP)
	announced = append(announced, after, outageIP)
	sort.Strings(allVIPs)
	sort.Strings(announced)
	l.waitIPSets(t, allVIPs, announced)
	l.waitEvent(t, "default", "during-outage", "FirewallAdmitted")

	// Deleting everything releases every address and leaves only user entries.
	for _, ns := range []string{"default", "team"} {
		list, err := svcs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			if err := svcs(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	Eventually(t, 60*time.Second, "LoadBalancer Services deleted", func(ctx context.Context) error {
		list, err := svcs("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, s := range list.Items {
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
				return errorf("%s/%s still there (finalizers %v)", s.Namespace, s.Name, s.Finalizers)
			}
		}
		return nil
	})
	l.waitIPSets(t, nil, nil)
}

// waitIPSets waits until the cluster set holds exactly vips as pvelb entries,
// each announcing VM's ipfilter set exactly announced, the excluded VM none,
// and every user entry is still in place.
func (l *Lab) waitIPSets(t *testing.T, vips, announced []string) {
	t.Helper()
	Eventually(t, 60*time.Second, "Proxmox IPSets", func(context.Context) error {
		ours, users := l.setEntries(pve.ClusterScope, clusterSet)
		if !slices.Equal(ours, vips) {
			return errorf("cluster set %s: pvelb entries %v, want %v", clusterSet, ours, vips)
		}
		if want := []string{userClusterIP + " " + userComment}; !slices.Equal(users, want) {
			return errorf("cluster set %s: user entries %v, want %v", clusterSet, users, want)
		}
		for _, vm := range labVMs {
			ours, users := l.setEntries(vmScope(vm), vmSet)
			want := announced
			if vm.vmid == excludedNodeVM {
				want = nil
			}
			if !slices.Equal(ours, want) {
				return errorf("VM %d %s: pvelb entries %v, want %v", vm.vmid, vmSet, ours, want)
			}
			if wantUser := []string{vm.ip + " node address"}; !slices.Equal(users, wantUser) {
				return errorf("VM %d %s: user entries %v, want %v", vm.vmid, vmSet, users, wantUser)
			}
		}
		return nil
	})
}

// TestLoadBalancerClassOnly runs pvelb beside another implementation
// (loadBalancer.serveClasslessServices: false): class-less Services are left
// alone entirely (no finalizer, no status, no annotation), pvelb-class ones
// are served, and a pvelb-class Service turned into ClusterIP is released.
func TestLoadBalancerClassOnly(t *testing.T) {
	l := lbLab(t, `loadBalancer:
  serveClasslessServices: false
firewall:
  resyncPeriod: 3s
`)
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/28"}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	l.createService(t, "default", "classless")
	l.createService(t, "default", "mine", withClass(lbClass))
	l.createService(t, "default", "other", withClass("example.com/other"))
	ip := l.waitIPs(t, "default", "mine", 1)[0]
	l.waitIPSets(t, []string{ip}, []string{ip})

	ctx := context.Background()
	svcs := l.Client.CoreV1().Services("default")
	Consistently(t, 3*time.Second, "class-less and foreign Services untouched", func(ctx context.Context) error {
		for _, name := range []string{"classless", "other"} {
			s, err := svcs.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(s.Status.LoadBalancer.Ingress) > 0 || len(s.Finalizers) > 0 || len(s.Annotations) > 0 {
				return errorf("%s touched: ingress %v finalizers %v annotations %v", name, s.Status.LoadBalancer.Ingress, s.Finalizers, s.Annotations)
			}
		}
		return nil
	})

	// A shrunk pool keeps serving the address it no longer contains, with a
	// Warning, rather than moving it.
	dyn := dynamic.NewForConfigOrDie(l.CP.Config)
	shrink := `{"spec":{"addresses":["203.0.113.200/29"]}}`
	if _, err := dyn.Resource(ippoolGVR).Patch(ctx, "main", types.MergePatchType, []byte(shrink), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitEvent(t, "default", "mine", "AddressOutsidePools", ip, "outside every IPPool")
	Consistently(t, 2*time.Second, "address kept after the pool shrank", func(ctx context.Context) error {
		if got := l.waitIPs(t, "default", "mine", 1)[0]; got != ip {
			return errorf("address moved from %s to %s", ip, got)
		}
		return nil
	})
	l.waitIPSets(t, []string{ip}, []string{ip})

	// Type change away from LoadBalancer: the apiserver drops the class; pvelb
	// must still release the address, clear the status and the finalizer.
	patch := `{"spec":{"type":"ClusterIP","loadBalancerClass":null,"allocateLoadBalancerNodePorts":null}}`
	if _, err := svcs.Patch(ctx, "mine", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "mine released", func(ctx context.Context) error {
		s, err := svcs.Get(ctx, "mine", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Finalizers) > 0 || len(s.Status.LoadBalancer.Ingress) > 0 || s.Annotations["pvelb.io/allocated-pool"] != "" {
			return errorf("finalizers %v ingress %v annotations %v", s.Finalizers, s.Status.LoadBalancer.Ingress, s.Annotations)
		}
		return nil
	})
	l.waitIPSets(t, nil, nil)

	// The same change while pvelb-ccm is down: the apiserver clears the class,
	// so after the restart only pvelb's annotation and the finalizer say the
	// Service was ours. It must still be released, not left with a finalizer.
	l.createService(t, "default", "mine2", withClass(lbClass))
	ip2 := l.waitIPs(t, "default", "mine2", 1)[0]
	l.waitIPSets(t, []string{ip2}, []string{ip2})
	ccm.Stop()
	if _, err := svcs.Patch(ctx, "mine2", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	l.startCCM(t)
	Eventually(t, 30*time.Second, "mine2 released after a restart", func(ctx context.Context) error {
		s, err := svcs.Get(ctx, "mine2", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Finalizers) > 0 || len(s.Status.LoadBalancer.Ingress) > 0 || s.Annotations["pvelb.io/allocated-pool"] != "" {
			return errorf("finalizers %v ingress %v annotations %v", s.Finalizers, s.Status.LoadBalancer.Ingress, s.Annotations)
		}
		return nil
	})
	l.waitIPSets(t, nil, nil)
}
