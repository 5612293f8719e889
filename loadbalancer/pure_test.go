package loadbalancer

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
)

func node(name string, lbls map[string]string, mod ...func(*v1.Node)) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	for _, m := range mod {
		m(n)
	}
	return n
}

func nodeNames(ns []*v1.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

func TestSelectNodes(t *testing.T) {
	exclude := map[string]string{v1.LabelNodeExcludeBalancers: ""}
	now := metav1.Now()
	nodes := []*v1.Node{
		node("w2", map[string]string{"role": "lb"}),
		node("w1", map[string]string{"role": "lb"}),
		node("cp", exclude),
		node("false-label", map[string]string{v1.LabelNodeExcludeBalancers: "false"}),
		node("garbage-label", map[string]string{v1.LabelNodeExcludeBalancers: "maybe"}),
		node("draining", nil, func(n *v1.Node) { n.Spec.Taints = []v1.Taint{{Key: eligibility.ToBeDeletedTaint}} }),
		node("deleting", nil, func(n *v1.Node) { n.DeletionTimestamp = &now }),
		node("lb-draining", map[string]string{"role": "lb"}, func(n *v1.Node) { n.Spec.Taints = []v1.Taint{{Key: eligibility.ToBeDeletedTaint}} }),
	}
	locatedW1 := func(n *v1.Node) bool { return n.Name == "w1" }
	for _, tc := range []struct {
		name                                   string
		sel                                    labels.Selector
		located                                func(*v1.Node) bool
		eligible, excluded, notSelected, leave []string
		noVM                                   []string
	}{
		{"no selector", nil, nil, []string{"false-label", "w1", "w2"}, []string{"cp", "garbage-label"}, nil, []string{"deleting", "draining", "lb-draining"}, nil},
		// The selector comes first: a node the pool never selects is not
		// reported as excluded or leaving, which would suggest a useless fix.
		{"role=lb", labels.SelectorFromSet(labels.Set{"role": "lb"}), nil, []string{"w1", "w2"}, nil,
			[]string{"cp", "deleting", "draining", "false-label", "garbage-label"}, []string{"lb-draining"}, nil},
		{"only w1's VM located", labels.SelectorFromSet(labels.Set{"role": "lb"}), locatedW1, []string{"w1"}, nil,
			[]string{"cp", "deleting", "draining", "false-label", "garbage-label"}, []string{"lb-draining"}, []string{"w2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := SelectNodes(nodes, tc.sel, tc.located)
			if got := nodeNames(s.Eligible); !slices.Equal(got, tc.eligible) {
				t.Errorf("eligible %v, want %v", got, tc.eligible)
			}
			if !slices.Equal(s.Excluded, tc.excluded) || !slices.Equal(s.NotSelected, tc.notSelected) || !slices.Equal(s.Leaving, tc.leave) || !slices.Equal(s.NoVM, tc.noVM) {
				t.Errorf("excluded %v notSelected %v leaving %v noVM %v", s.Excluded, s.NotSelected, s.Leaving, s.NoVM)
			}
			if msg := s.NoEligibleNodeMessage("p"); msg != "" {
				t.Errorf("message %q with eligible nodes", msg)
			}
		})
	}
}

func TestNoEligibleNodeMessage(t *testing.T) {
	exclude := map[string]string{v1.LabelNodeExcludeBalancers: "true"}
	for _, tc := range []struct {
		name  string
		nodes []*v1.Node
		sel   labels.Selector
		want  []string
	}{
		{"talos control plane only", []*v1.Node{node("cp1", exclude)}, nil,
			[]string{"node.kubernetes.io/exclude-from-external-load-balancers", "cp1", "Talos", "kubectl label node", "$patch: delete"}},
		{"selector matches nothing", []*v1.Node{node("w1", nil)}, labels.SelectorFromSet(labels.Set{"a": "b"}),
			[]string{"do not match IPPool pool-a's spec.announce.nodeSelector (w1)"}},
		{"no nodes", nil, nil, []string{"the cluster has no nodes"}},
		{"draining", []*v1.Node{node("w1", nil, func(n *v1.Node) { n.Spec.Taints = []v1.Taint{{Key: eligibility.ToBeDeletedTaint}} })}, nil,
			[]string{"being deleted or drained by the cluster autoscaler (w1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := SelectNodes(tc.nodes, tc.sel, nil).NoEligibleNodeMessage("pool-a")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestNoEligibleNodeMessageNoVM(t *testing.T) {
	msg := SelectNodes([]*v1.Node{node("w1", nil)}, nil, func(*v1.Node) bool { return false }).NoEligibleNodeMessage("pool-a")
	for _, w := range []string{"no Proxmox VM pvelb could locate", "(w1)", "spec.providerID proxmox://<region>/<vmid>"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q lacks %q", msg, w)
		}
	}
}

func TestBuildDesired(t *testing.T) {
	a1, a2, a3 := netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("2001:db8::100"), netip.MustParseAddr("198.51.100.7")
	withIP := func(ip string) func(*v1.Node) {
		return func(n *v1.Node) {
			n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}, {Type: v1.NodeHostName, Address: n.Name}}
		}
	}
	nodes := []*v1.Node{
		node("w1", map[string]string{"zone": "a"}, withIP("192.0.2.11")),
		node("w2", map[string]string{"zone": "b"}, withIP("192.0.2.12")),
		node("cp", map[string]string{v1.LabelNodeExcludeBalancers: ""}, withIP("192.0.2.10")),
		node("novm", nil),
	}
	vms := map[string]vmLocation{
		"w1": {Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 101}, Name: "w1"},
		"w2": {Region: "lab", Ref: pve.VMRef{Node: "pve2", VMID: 102}, Name: "w2"},
		"cp": {Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 100}, Name: "cp"},
	}
	pools := map[string]poolView{
		"all":   {Name: "all"},
		"zonea": {Name: "zonea", Selector: labels.SelectorFromSet(labels.Set{"zone": "a"})},
		"none":  {Name: "none", Selector: labels.SelectorFromSet(labels.Set{"zone": "x"})},
	}
	d, problems := buildDesired(desiredInput{
		Nodes: nodes, VMs: vms, Pools: pools,
		Services: []serviceVIPs{
			{Key: "ns/dual", Addrs: []netip.Addr{a1, a2}, Pools: []string{"all", "zonea"}},
			{Key: "ns/shared", Addrs: []netip.Addr{a1}, Pools: []string{"all"}},
			{Key: "ns/lonely", Addrs: []netip.Addr{a3}, Pools: []string{"none"}},
		},
	})
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(d.VIPs) != 3 || !slices.Equal(d.VIPs[0].Services, []string{"ns/dual", "ns/shared"}) {
		t.Errorf("VIPs %+v", d.VIPs)
	}
	got := map[string][]netip.Addr{}
	for _, vm := range d.VMs {
		got[vm.Node] = vm.VIPs
		if vm.Node == "w1" && !slices.Equal(vm.Addresses, []netip.Addr{netip.MustParseAddr("192.0.2.11")}) {
			t.Errorf("w1 own addresses %v", vm.Addresses)
		}
	}
	want := map[string][]netip.Addr{"w1": {a1, a2}, "w2": {a1}, "cp": nil}
	if len(got) != len(want) {
		t.Errorf("VMs %v, want %v (novm has no VM and must be absent)", got, want)
	}
	for n, w := range want {
		if !slices.Equal(got[n], w) {
			t.Errorf("VM of %s admits %v, want %v", n, got[n], w)
		}
	}
	if msg := problems["ns/lonely"]; !strings.Contains(msg, "IPPool none") {
		t.Errorf("lonely problem %q", msg)
	}
	if _, ok := problems["ns/dual"]; ok || len(problems) != 1 {
		t.Errorf("problems %v", problems)
	}
}

// Extra addresses (Talos's control-plane VIP) are admitted in the VMs of
// the Nodes their selector picks, even Nodes excluded from load balancers,
// and listed with the VIPs under their owner name; an address a Service
// also holds is admitted for both.
func TestBuildDesiredExtraAddresses(t *testing.T) {
	vip, talos := netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("192.0.2.5")
	nodes := []*v1.Node{
		node("w1", nil),
		node("cp1", map[string]string{"node-role.kubernetes.io/control-plane": "", v1.LabelNodeExcludeBalancers: ""}),
		node("cp2", map[string]string{"node-role.kubernetes.io/control-plane": ""}),
	}
	vms := map[string]vmLocation{
		"w1":  {Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 101}},
		"cp1": {Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 100}},
		// cp2's VM is not known: nothing to admit it in.
	}
	sel, err := labels.Parse("node-role.kubernetes.io/control-plane")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := buildDesired(desiredInput{
		Nodes: nodes, VMs: vms, Pools: map[string]poolView{"all": {Name: "all"}},
		Services: []serviceVIPs{{Key: "ns/web", Addrs: []netip.Addr{vip}, Pools: []string{"all"}}},
		Extra:    []config.ExtraAddress{{Name: "talos-vip", Addresses: []netip.Addr{talos}, NodeSelector: sel}},
	})
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(d.VIPs) != 2 || d.VIPs[1].Addr != talos || !slices.Equal(d.VIPs[1].Services, []string{"extraAddresses/talos-vip"}) {
		t.Errorf("VIPs %+v; want the Service's and talos-vip's", d.VIPs)
	}
	got := map[string][]netip.Addr{}
	for _, vm := range d.VMs {
		got[vm.Node] = vm.VIPs
	}
	if want := []netip.Addr{talos}; !slices.Equal(got["cp1"], want) {
		t.Errorf("cp1 admits %v; want %v (its selector picks it, exclusion from load balancers notwithstanding)", got["cp1"], want)
	}
	if want := []netip.Addr{vip}; !slices.Equal(got["w1"], want) {
		t.Errorf("w1 admits %v; want only the Service VIP %v", got["w1"], want)
	}
}

func TestStatusForSetsIPModeVIP(t *testing.T) {
	st := statusFor([]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")})
	if len(st.Ingress) != 2 || st.Ingress[1].IP != "2001:db8::1" {
		t.Fatalf("%+v", st)
	}
	for _, in := range st.Ingress {
		if in.IPMode == nil || *in.IPMode != v1.LoadBalancerIPModeVIP {
			t.Errorf("%s: ipMode %v, want VIP", in.IP, in.IPMode)
		}
	}
}

func TestEventReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&allocator.Error{Reason: allocator.ReasonHeldBy}, "AddressInUse"},
		{&allocator.Error{Reason: allocator.ReasonNotInAnyPool}, "AddressOutsidePools"},
		{&allocator.Error{Reason: allocator.ReasonPoolExhausted}, "PoolExhausted"},
		{&allocator.Error{Reason: allocator.ReasonSharingRefused}, "SharingRefused"},
		{errors.New("x"), names.EventAllocationFailed},
	} {
		if got := eventReason(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestBuildPoolsRefusesOverlapsAndBadSpecs(t *testing.T) {
	pool := func(name string, addrs ...string) *v1alpha1.IPPool {
		return &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 3}, Spec: v1alpha1.IPPoolSpec{Addresses: addrs}}
	}
	ps := buildPools([]*v1alpha1.IPPool{
		pool("a", "192.0.2.0/28"),
		pool("b", "192.0.2.10-192.0.2.20"),
		pool("c", "198.51.100.0/24", "2001:db8::/120"),
		pool("bad", "192.0.2.300/24"),
	})
	for name, wantUsable := range map[string]bool{"a": false, "b": false, "c": true, "bad": false} {
		if got := ps[name].alloc.Usable; got != wantUsable {
			t.Errorf("%s usable %v, want %v", name, got, wantUsable)
		}
	}
	if !slices.Equal(ps["a"].overlaps, []string{"b"}) {
		t.Errorf("a overlaps %v", ps["a"].overlaps)
	}
	conds := poolConditions(ps["a"])
	if conds[0].Type != v1alpha1.IPPoolReady || conds[0].Status != metav1.ConditionFalse || !strings.Contains(conds[0].Message, "b") {
		t.Errorf("a Ready %+v", conds[0])
	}
	if conds[1].Type != v1alpha1.IPPoolOverlapping || conds[1].Status != metav1.ConditionTrue || conds[1].ObservedGeneration != 3 {
		t.Errorf("a Overlapping %+v", conds[1])
	}
	if c := poolConditions(ps["bad"])[0]; c.Status != metav1.ConditionFalse || c.Reason != "InvalidSpec" {
		t.Errorf("bad Ready %+v", c)
	}
	if c := poolConditions(ps["c"]); c[0].Status != metav1.ConditionTrue || c[1].Status != metav1.ConditionFalse {
		t.Errorf("c conditions %+v", c)
	}
	if got := len(ps["c"].view.Ranges); got != 2 {
		t.Errorf("c firewall ranges %d, want 2", got)
	}
}

func TestLeftBehind(t *testing.T) {
	class := names.Class
	other := "example.com/other"
	svc := func(typ v1.ServiceType, cls *string, annotated bool, finalizers ...string) *v1.Service {
		s := &v1.Service{Spec: v1.ServiceSpec{Type: typ, LoadBalancerClass: cls}, ObjectMeta: metav1.ObjectMeta{Finalizers: finalizers}}
		if annotated {
			s.Annotations = map[string]string{names.AnnotationAllocatedPool: "default"}
		}
		return s
	}
	for _, tc := range []struct {
		name      string
		svc       *v1.Service
		classless bool // a service controller runs
		want      bool
	}{
		{"became ClusterIP while pvelb-ccm was down", svc(v1.ServiceTypeClusterIP, nil, true, names.FinalizerClass), true, true},
		{"same, no service controller", svc(v1.ServiceTypeClusterIP, nil, true, names.FinalizerClass), false, true},
		{"standard finalizer of an older version, no service controller", svc(v1.ServiceTypeClusterIP, nil, true, names.FinalizerService), false, true},
		{"standard finalizer: the service controller's", svc(v1.ServiceTypeClusterIP, nil, true, names.FinalizerService), true, false},
		{"still a LoadBalancer (the service controller's)", svc(v1.ServiceTypeLoadBalancer, nil, true, names.FinalizerService), true, false},
		{"pvelb class: handled as a class Service", svc(v1.ServiceTypeLoadBalancer, &class, true, names.FinalizerClass), true, false},
		{"another class", svc(v1.ServiceTypeLoadBalancer, &other, false, names.FinalizerService), true, false},
		{"no pvelb annotation", svc(v1.ServiceTypeClusterIP, nil, false, names.FinalizerClass), true, false},
		{"finalizer already gone", svc(v1.ServiceTypeClusterIP, nil, true), false, false},
	} {
		if got := leftBehind(tc.svc, tc.classless); got != tc.want {
			t.Errorf("%s: leftBehind = %v, want %v", tc.name, got, tc.want)
		}
	}
}
