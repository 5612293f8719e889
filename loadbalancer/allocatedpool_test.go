package loadbalancer

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/announcer"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/pve"
)

func TestAllocatedPoolValue(t *testing.T) {
	for _, tt := range []struct {
		name       string
		pools      []string
		have       string
		present    bool
		want       string
		wantRemove bool
	}{
		{"first allocation", []string{"main"}, "", false, "main", false},
		{"unchanged", []string{"main"}, "main", true, "main", false},
		{"dual-stack from one pool: named once", []string{"main", "main"}, "", false, "main", false},
		{"dual-stack from two pools, in address order", []string{"v4", "v6"}, "", false, "v4,v6", false},
		{"renamed over the same range", []string{"new"}, "old", true, "new", false},
		{"one address left outside every pool: the others' pools", []string{"", "v6"}, "v4,v6", true, "v6", false},
		{"no pool holds any: the recorded pools stay", []string{"", ""}, "old", true, "old", false},
		{"no pool holds any, nothing recorded: present but empty", []string{""}, "", false, "", false},
		{"released", nil, "main", true, "", true},
		{"released, nothing recorded", nil, "", false, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want, remove := allocatedPoolValue(tt.pools, tt.have, tt.present)
			if want != tt.want || remove != tt.wantRemove {
				t.Errorf("allocatedPoolValue(%q, %q, %v) = %q, %v; want %q, %v", tt.pools, tt.have, tt.present, want, remove, tt.want, tt.wantRemove)
			}
		})
	}
}

func TestAllocatedPoolPatch(t *testing.T) {
	for _, tt := range []struct {
		name   string
		want   string
		remove bool
		rv     string
		patch  map[string]any
	}{
		{"set", "a,b", false, "", map[string]any{"metadata": map[string]any{"annotations": map[string]any{names.AnnotationAllocatedPool: "a,b"}}}},
		{"set an empty value", "", false, "", map[string]any{"metadata": map[string]any{"annotations": map[string]any{names.AnnotationAllocatedPool: ""}}}},
		{"remove", "", true, "", map[string]any{"metadata": map[string]any{"annotations": map[string]any{names.AnnotationAllocatedPool: nil}}}},
		{"conditional on the version read", "new", false, "42", map[string]any{"metadata": map[string]any{
			"resourceVersion": "42", "annotations": map[string]any{names.AnnotationAllocatedPool: "new"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]any
			if err := json.Unmarshal(allocatedPoolPatch(tt.want, tt.remove, tt.rv), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.patch) {
				t.Errorf("patch %v, want %v", got, tt.patch)
			}
		})
	}
}

func TestSameAddrs(t *testing.T) {
	a4, a6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for _, tt := range []struct {
		a, b []netip.Addr
		want bool
	}{
		{nil, nil, true},
		{[]netip.Addr{a4, a6}, []netip.Addr{a6, a4}, true},
		{[]netip.Addr{a4}, []netip.Addr{a4, a6}, false},
		{[]netip.Addr{a4}, []netip.Addr{a6}, false},
	} {
		if got := sameAddrs(tt.a, tt.b); got != tt.want {
			t.Errorf("sameAddrs(%v, %v) = %v", tt.a, tt.b, got)
		}
	}
}

// pvelb-ccm and the announcer resolve an address's pool alike, whatever the
// Service's pvelb.io/allocated-pool still says: after a rename the firewall
// admits the address by the new pool's selector and the announcer elects
// among exactly those nodes; an address no pool holds is admitted on, and
// announced from, every node the shared rule allows with no selector.
func TestPoolOfAddressAgreement(t *testing.T) {
	edge := map[string]string{"role": "edge"}
	now := metav1.Now()
	nodes := []*v1.Node{
		node("a", nil),
		node("b", edge),
		node("excluded", map[string]string{v1.LabelNodeExcludeBalancers: ""}),
		node("leaving", edge, func(n *v1.Node) { n.DeletionTimestamp = &now; n.Finalizers = []string{"x"} }),
	}
	ippools := []*v1alpha1.IPPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "renamed"}, Spec: v1alpha1.IPPoolSpec{Addresses: []string{"192.0.2.0/28"},
			Announce: v1alpha1.Announce{NodeSelector: &metav1.LabelSelector{MatchLabels: edge}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: v1alpha1.IPPoolSpec{Addresses: []string{"198.51.100.0/24"}}},
	}
	// Annotated with the pools they were allocated from, now renamed or gone.
	services := map[string][]string{"old": {"192.0.2.5"}, "gone": {"203.0.113.5"}}
	want := map[string][]string{"192.0.2.5": {"b"}, "203.0.113.5": {"a", "b"}}

	pools := buildPools(ippools)
	in := desiredInput{Pools: map[string]poolView{}, Nodes: nodes, VMs: map[string]vmLocation{}}
	for name, p := range pools {
		in.Pools[name] = p.view
	}
	for i, n := range nodes {
		in.VMs[n.Name] = vmLocation{Region: "lab", Ref: pve.VMRef{Node: "pve1", VMID: 101 + i}}
	}
	var svcs []*v1.Service
	for pool, ips := range services {
		sv := serviceVIPs{Key: "d/" + pool}
		svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "d", Name: pool, Annotations: map[string]string{names.AnnotationAllocatedPool: pool}},
			Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer}}
		for _, ip := range ips {
			a := netip.MustParseAddr(ip)
			sv.Addrs = append(sv.Addrs, a)
			sv.Pools = append(sv.Pools, poolOfAddr(pools, a))
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
		in.Services = append(in.Services, sv)
		svcs = append(svcs, svc)
	}
	desired, problems := buildDesired(in)
	if len(problems) > 0 {
		t.Errorf("pvelb-ccm finds no eligible node: %v", problems)
	}

	// What pvelb-ccm publishes once the sets are written: each Node's VM
	// admits the VIPs the desired state gave it.
	admittedOn := map[string][]string{}
	var seen []*v1.Node
	for _, n := range nodes {
		n = n.DeepCopy()
		var prefixes []netip.Prefix
		for _, vm := range desired.VMs {
			if vm.Node != n.Name {
				continue
			}
			for _, a := range vm.VIPs {
				prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
				admittedOn[a.String()] = append(admittedOn[a.String()], n.Name)
			}
		}
		n.Annotations = map[string]string{names.AnnotationAdmitted: eligibility.AdmitPrefixes(prefixes).String()}
		seen = append(seen, n)
	}
	announcerPools := map[string]*v1alpha1.IPPool{}
	for _, p := range ippools {
		announcerPools[p.Name] = p
	}
	plan := announcer.Plan(announcer.Inputs{Services: svcs, Pools: announcerPools, Nodes: seen, Alive: func(string) bool { return true }})
	if len(plan) != len(want) {
		t.Fatalf("plan %+v, want %d assignments", plan, len(want))
	}
	for _, a := range plan {
		ip := a.IP.String()
		slices.Sort(admittedOn[ip])
		if !slices.Equal(a.Candidates, want[ip]) || !slices.Equal(admittedOn[ip], want[ip]) {
			t.Errorf("%s: announcer candidates %v, pvelb-ccm admits on %v, want %v", ip, a.Candidates, admittedOn[ip], want[ip])
		}
		if a.Code != "" || a.Winner == "" {
			t.Errorf("%s not announced: %s: %s", ip, a.Code, a.Reason)
		}
	}
}
