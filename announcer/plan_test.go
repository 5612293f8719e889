package announcer

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/announcer/election"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/names"
)

// node is a Node whose VM admits every address (as pvelb-ccm marks it when
// no filter applies); see admits for others.
func node(name, zone string, labels ...string) *v1.Node {
	l := map[string]string{names.LabelZone: zone}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l,
		Annotations: map[string]string{names.AnnotationAdmitted: eligibility.Unfiltered}}}
}

// admits sets what the node's VM admits; "-" removes the annotation (the
// VM was not located).
func admits(n *v1.Node, value string) *v1.Node {
	n = n.DeepCopy()
	if value == "-" {
		delete(n.Annotations, names.AnnotationAdmitted)
	} else {
		n.Annotations[names.AnnotationAdmitted] = value
	}
	return n
}

func leaving(n *v1.Node) *v1.Node {
	n = n.DeepCopy()
	n.Spec.Taints = append(n.Spec.Taints, v1.Taint{Key: eligibility.ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule})
	return n
}

func svc(ns, name, pools string, local bool, ips ...string) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyCluster},
	}
	if pools != "" {
		s.Annotations[names.AnnotationAllocatedPool] = pools
	}
	if local {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func pool(name string, mode v1alpha1.AnnounceMode, sel *metav1.LabelSelector, addrs ...string) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.IPPoolSpec{Addresses: addrs, Announce: v1alpha1.Announce{Mode: mode, NodeSelector: sel, Interfaces: []string{}}},
	}
}

func TestPlan(t *testing.T) {
	nodes := []*v1.Node{
		node("n1", "pve1"), node("n2", "pve2"), node("n3", "pve3", "pvelb.io/edge", "true"),
		node("cp1", "pve1", v1.LabelNodeExcludeBalancers, "true"),
	}
	pools := map[string]*v1alpha1.IPPool{
		"main": pool("main", v1alpha1.AnnounceARP, nil, "192.0.2.200/29", "2001:db8:0:1::200-2001:db8:0:1::2ff"),
		"edge": pool("edge", "", &metav1.LabelSelector{MatchLabels: map[string]string{"pvelb.io/edge": "true"}}, "198.51.100.10-198.51.100.20"),
		"bgp":  pool("bgp", v1alpha1.AnnounceBGP, nil, "203.0.113.0/28"),
		"bad":  pool("bad", v1alpha1.AnnounceARP, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}}, "203.0.113.64/28"),
	}
	ready := ReadyNodes([]*discoveryv1.EndpointSlice{
		slice("default", "local", "n2", true), slice("default", "local", "n1", false),
		slice("default", "shared-local", "n1", true),
	})
	all := func(string) bool { return true }
	winnerOf := func(ip string, cands ...string) string {
		var cs []election.Candidate
		for _, c := range cands {
			for _, n := range nodes {
				if n.Name == c {
					cs = append(cs, election.Candidate{Name: c, Zone: n.Labels[names.LabelZone]})
				}
			}
		}
		w, _ := election.Elect(netip.MustParseAddr(ip), cs, all)
		return w
	}
	tests := []struct {
		name     string
		services []*v1.Service
		alive    func(string) bool
		want     map[string]string // ip -> winner ("" none)
		reason   map[string]string // ip -> substring of Reason
		sharing  map[string][]string
		absent   []string
	}{
		{
			name:     "cluster service: any non-excluded node",
			services: []*v1.Service{svc("default", "web", "main", false, "192.0.2.201", "2001:db8:0:1::201")},
			alive:    all,
			want: map[string]string{
				"192.0.2.201":       winnerOf("192.0.2.201", "n1", "n2", "n3"),
				"2001:db8:0:1::201": winnerOf("2001:db8:0:1::201", "n1", "n2", "n3"),
			},
		},
		{
			name:     "node selector of the pool",
			services: []*v1.Service{svc("default", "edge", "edge", false, "198.51.100.15")},
			alive:    all,
			want:     map[string]string{"198.51.100.15": "n3"},
		},
		{
			name:     "selected node dead: nobody",
			services: []*v1.Service{svc("default", "edge", "edge", false, "198.51.100.15")},
			alive:    func(n string) bool { return n != "n3" },
			want:     map[string]string{"198.51.100.15": ""},
			reason:   map[string]string{"198.51.100.15": "alive"},
		},
		{
			name:     "local service follows ready endpoints",
			services: []*v1.Service{svc("default", "local", "main", true, "192.0.2.202")},
			alive:    all,
			want:     map[string]string{"192.0.2.202": "n2"},
		},
		{
			name:     "local service without endpoints: no announcement",
			services: []*v1.Service{svc("default", "nothing", "main", true, "192.0.2.203")},
			alive:    all,
			want:     map[string]string{"192.0.2.203": ""},
			reason:   map[string]string{"192.0.2.203": "ready endpoint"},
		},
		{
			name: "shared IP: one election, eligible for every service",
			services: []*v1.Service{
				svc("default", "shared-cluster", "main", false, "192.0.2.204"),
				svc("default", "shared-local", "main", true, "192.0.2.204"),
			},
			alive:   all,
			want:    map[string]string{"192.0.2.204": "n1"},
			sharing: map[string][]string{"192.0.2.204": {"default/shared-cluster", "default/shared-local"}},
		},
		{
			name:     "BGP pools have no winner: no election",
			services: []*v1.Service{svc("default", "bgp", "bgp", false, "203.0.113.1")},
			alive:    all,
			want:     map[string]string{"203.0.113.1": ""},
		},
		{
			name: "not allocated by pvelb, or not a LoadBalancer: ignored",
			services: []*v1.Service{
				svc("default", "foreign", "", false, "192.0.2.205"),
				func() *v1.Service {
					s := svc("default", "np", "main", false, "192.0.2.206")
					s.Spec.Type = v1.ServiceTypeNodePort
					return s
				}(),
			},
			alive:  all,
			absent: []string{"192.0.2.205", "192.0.2.206"},
		},
		{
			name:     "address outside every pool: announced with the defaults",
			services: []*v1.Service{svc("default", "odd", "main", false, "198.51.100.99")},
			alive:    all,
			want:     map[string]string{"198.51.100.99": winnerOf("198.51.100.99", "n1", "n2", "n3")},
		},
		{
			name:     "broken node selector names the field",
			services: []*v1.Service{svc("default", "bad", "bad", false, "203.0.113.65")},
			alive:    all,
			want:     map[string]string{"203.0.113.65": ""},
			reason:   map[string]string{"203.0.113.65": "spec.announce.nodeSelector"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(Inputs{Services: tt.services, Pools: pools, Nodes: nodes, ReadyNodes: ready, Alive: tt.alive})
			byIP := map[string]Assignment{}
			for _, a := range got {
				byIP[a.IP.String()] = a
				if slices.Contains(a.Candidates, "cp1") {
					t.Errorf("%s: excluded node cp1 is a candidate", a.IP)
				}
			}
			for ip, w := range tt.want {
				a, ok := byIP[ip]
				if !ok {
					t.Fatalf("no assignment for %s in %+v", ip, got)
				}
				if a.Winner != w {
					t.Errorf("%s: winner %q, want %q (candidates %v, reason %q)", ip, a.Winner, w, a.Candidates, a.Reason)
				}
				if r := tt.reason[ip]; r != "" && !strings.Contains(a.Reason, r) {
					t.Errorf("%s: reason %q, want it to mention %q", ip, a.Reason, r)
				}
				if s := tt.sharing[ip]; s != nil && !slices.Equal(a.Services, s) {
					t.Errorf("%s: services %v, want %v", ip, a.Services, s)
				}
			}
			for _, ip := range tt.absent {
				if _, ok := byIP[ip]; ok {
					t.Errorf("%s should not be in the plan", ip)
				}
			}
		})
	}
}

func slice(ns, svcName, nodeName string, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svcName + "-" + nodeName, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		Endpoints:  []discoveryv1.Endpoint{{NodeName: &nodeName, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
}

// An address belongs to the pool that holds it now, whatever the Service's
// pvelb.io/allocated-pool still says: pvelb-ccm keeps addresses when pools
// are renamed, shrunk or deleted, and rewrites the annotation only after the
// fact. An address no pool holds is announced with the defaults (ARP on the
// default interface, every node eligible by the shared rule), as pvelb-ccm
// admits it in the firewall, rather than left unanswered.
func TestPlanPoolOfAddress(t *testing.T) {
	edgeSel := &metav1.LabelSelector{MatchLabels: map[string]string{"pvelb.io/edge": "true"}}
	withIfaces := func(p *v1alpha1.IPPool, ifs ...string) *v1alpha1.IPPool { p.Spec.Announce.Interfaces = ifs; return p }
	withPrio := func(p *v1alpha1.IPPool, prio int32) *v1alpha1.IPPool {
		p.Spec.AllocateTo = &v1alpha1.AllocateTo{Priority: prio}
		return p
	}
	nodes := []*v1.Node{node("n1", "pve1"), node("n2", "pve2", "pvelb.io/edge", "true"), node("cp", "pve1", v1.LabelNodeExcludeBalancers, "")}
	all := func(string) bool { return true }
	for _, tt := range []struct {
		name   string
		pools  []*v1alpha1.IPPool
		svc    *v1.Service
		pool   string // want
		mode   v1alpha1.AnnounceMode
		ifaces []string
		cands  []string
	}{
		{
			name:  "annotated pool holds it",
			pools: []*v1alpha1.IPPool{withIfaces(pool("old", v1alpha1.AnnounceARP, nil, "192.0.2.0/28"), "eth1")},
			svc:   svc("d", "s", "old", false, "192.0.2.3"),
			pool:  "old", mode: v1alpha1.AnnounceARP, ifaces: []string{"eth1"}, cands: []string{"n1", "n2"},
		},
		{
			name:  "renamed over the same range: the new pool's settings",
			pools: []*v1alpha1.IPPool{withIfaces(pool("new", v1alpha1.AnnounceARP, edgeSel, "192.0.2.0/28"), "eth1")},
			svc:   svc("d", "s", "old", false, "192.0.2.3"),
			pool:  "new", mode: v1alpha1.AnnounceARP, ifaces: []string{"eth1"}, cands: []string{"n2"},
		},
		{
			name:  "annotated pool shrunk, another pool holds it now",
			pools: []*v1alpha1.IPPool{pool("old", v1alpha1.AnnounceARP, nil, "192.0.2.0/30"), pool("bgp", v1alpha1.AnnounceBGP, nil, "192.0.2.4/30")},
			svc:   svc("d", "s", "old", false, "192.0.2.5"),
			pool:  "bgp", mode: v1alpha1.AnnounceBGP, cands: []string{"n1", "n2"},
		},
		{
			name:  "empty annotation still marks pvelb's address",
			pools: []*v1alpha1.IPPool{pool("main", "", nil, "192.0.2.0/28")},
			svc:   svc("d", "s", " ", false, "192.0.2.3"),
			pool:  "main", mode: v1alpha1.AnnounceARP, cands: []string{"n1", "n2"},
		},
		{
			name:  "overlapping pools: lower priority value (MetalLB's order), as pvelb-ccm decides",
			pools: []*v1alpha1.IPPool{withPrio(pool("a", v1alpha1.AnnounceARP, nil, "192.0.2.0/24"), 2), withPrio(pool("b", v1alpha1.AnnounceBGP, nil, "192.0.2.0/28"), 1)},
			svc:   svc("d", "s", "a", false, "192.0.2.3"),
			pool:  "b", mode: v1alpha1.AnnounceBGP, cands: []string{"n1", "n2"},
		},
		{
			name:  "overlapping pools of one priority: first by name",
			pools: []*v1alpha1.IPPool{pool("zz", v1alpha1.AnnounceBGP, nil, "192.0.2.0/24"), pool("aa", v1alpha1.AnnounceARP, edgeSel, "192.0.2.0/28")},
			svc:   svc("d", "s", "zz", false, "192.0.2.3"),
			pool:  "aa", mode: v1alpha1.AnnounceARP, cands: []string{"n2"},
		},
		{
			name:  "deleted: no pool, announced with the defaults",
			pools: []*v1alpha1.IPPool{withIfaces(pool("other", v1alpha1.AnnounceBGP, edgeSel, "198.51.100.0/24"), "eth1")},
			svc:   svc("d", "s", "old", false, "192.0.2.3"),
			pool:  "", mode: v1alpha1.AnnounceARP, cands: []string{"n1", "n2"},
		},
		{
			name:  "a pool with a broken spec holds nothing",
			pools: []*v1alpha1.IPPool{pool("broken", v1alpha1.AnnounceBGP, nil, "192.0.2.0/28", "not-an-address")},
			svc:   svc("d", "s", "broken", false, "192.0.2.3"),
			pool:  "", mode: v1alpha1.AnnounceARP, cands: []string{"n1", "n2"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pools := map[string]*v1alpha1.IPPool{}
			for _, p := range tt.pools {
				pools[p.Name] = p
			}
			got := Plan(Inputs{Services: []*v1.Service{tt.svc}, Pools: pools, Nodes: nodes, Alive: all})
			if len(got) != 1 {
				t.Fatalf("want one assignment, got %+v", got)
			}
			a := got[0]
			if a.Pool != tt.pool || a.Mode != tt.mode || !slices.Equal(a.Interfaces, tt.ifaces) || !slices.Equal(a.Candidates, tt.cands) {
				t.Errorf("got pool %q mode %q interfaces %q candidates %v, want %q %q %q %v",
					a.Pool, a.Mode, a.Interfaces, a.Candidates, tt.pool, tt.mode, tt.ifaces, tt.cands)
			}
			if a.Code != "" || (a.Mode == v1alpha1.AnnounceARP) != (a.Winner != "") {
				t.Errorf("not announced: winner %q, %s: %s", a.Winner, a.Code, a.Reason)
			}
		})
	}
}

func TestPlanBGP(t *testing.T) {
	edge := &metav1.LabelSelector{MatchLabels: map[string]string{"pvelb.io/edge": "true"}}
	lp := uint32(150)
	bgpPool := pool("bgp", v1alpha1.AnnounceBGP, nil, "203.0.113.0/28", "2001:db8:0:3::/64")
	bgpPool.Spec.Announce.Communities = []string{"65000:1"}
	bgpPool.Spec.Announce.LocalPreference = &lp
	pools := map[string]*v1alpha1.IPPool{
		"bgp":      bgpPool,
		"bgp-edge": pool("bgp-edge", v1alpha1.AnnounceBGP, edge, "203.0.113.32/28"),
		"bgp-none": pool("bgp-none", v1alpha1.AnnounceBGP, &metav1.LabelSelector{MatchLabels: map[string]string{"no": "such"}}, "203.0.113.48/28"),
	}
	nodes := []*v1.Node{
		node("n1", "pve1"), node("n2", "pve2", "pvelb.io/edge", "true"), node("n3", "pve3"),
		node("cp1", "pve1", v1.LabelNodeExcludeBalancers, ""),
		node("edge-cp", "pve2", "pvelb.io/edge", "true", v1.LabelNodeExcludeBalancers, "true"),
		node("kept", "pve3", v1.LabelNodeExcludeBalancers, "false"),
	}
	ready := ReadyNodes([]*discoveryv1.EndpointSlice{
		slice("default", "local", "n3", true), slice("default", "local", "n1", false), slice("default", "local", "cp1", true),
	})
	// Membership must not matter in BGP mode: the session is the liveness.
	nobody := func(string) bool { return false }
	tests := []struct {
		name       string
		nodes      []*v1.Node
		services   []*v1.Service
		ip         string
		candidates []string
		code       string
		reason     string
	}{
		{
			name:       "every eligible node advertises, dead or alive in the membership",
			services:   []*v1.Service{svc("default", "web", "bgp", false, "203.0.113.1")},
			ip:         "203.0.113.1",
			candidates: []string{"kept", "n1", "n2", "n3"},
		},
		{
			name:       "IPv6 too",
			services:   []*v1.Service{svc("default", "web6", "bgp", false, "2001:db8:0:3::1")},
			ip:         "2001:db8:0:3::1",
			candidates: []string{"kept", "n1", "n2", "n3"},
		},
		{
			name:       "Local: only nodes with a ready endpoint (and never an excluded one)",
			services:   []*v1.Service{svc("default", "local", "bgp", true, "203.0.113.2")},
			ip:         "203.0.113.2",
			candidates: []string{"n3"},
		},
		{
			name:     "Local without a ready endpoint",
			services: []*v1.Service{svc("default", "nothing", "bgp", true, "203.0.113.3")},
			ip:       "203.0.113.3",
			code:     ReasonNoReadyEndpoint,
			reason:   "ready endpoint",
		},
		{
			name:       "pool node selector",
			services:   []*v1.Service{svc("default", "edge", "bgp-edge", false, "203.0.113.33")},
			ip:         "203.0.113.33",
			candidates: []string{"n2"},
		},
		{
			name:     "selector matches none",
			services: []*v1.Service{svc("default", "none", "bgp-none", false, "203.0.113.49")},
			ip:       "203.0.113.49",
			code:     ReasonSelectorMatchesNone,
			reason:   "IPPool bgp-none matches no node",
		},
		{
			name:     "every selected node excluded",
			nodes:    []*v1.Node{node("cp1", "pve1", v1.LabelNodeExcludeBalancers, "true"), node("edge-cp", "pve2", "pvelb.io/edge", "true", v1.LabelNodeExcludeBalancers, "")},
			services: []*v1.Service{svc("default", "edge", "bgp-edge", false, "203.0.113.34")},
			ip:       "203.0.113.34",
			code:     ReasonAllExcluded,
			reason:   v1.LabelNodeExcludeBalancers,
		},
		{
			name:     "no nodes at all",
			nodes:    []*v1.Node{},
			services: []*v1.Service{svc("default", "web", "bgp", false, "203.0.113.5")},
			ip:       "203.0.113.5",
			code:     ReasonSelectorMatchesNone,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := nodes
			if tt.nodes != nil {
				ns = tt.nodes
			}
			got := Plan(Inputs{Services: tt.services, Pools: pools, Nodes: ns, ReadyNodes: ready, Alive: nobody})
			if len(got) != 1 {
				t.Fatalf("want one assignment, got %+v", got)
			}
			a := got[0]
			if a.IP.String() != tt.ip || a.Mode != v1alpha1.AnnounceBGP || a.Winner != "" || len(a.Interfaces) != 0 {
				t.Errorf("assignment %+v: want IP %s, mode bgp, no winner, no interfaces", a, tt.ip)
			}
			if !slices.Equal(a.Candidates, tt.candidates) {
				t.Errorf("candidates %v, want %v", a.Candidates, tt.candidates)
			}
			if a.Code != tt.code || !strings.Contains(a.Reason, tt.reason) || (tt.code == "") != (a.Reason == "") {
				t.Errorf("code %q reason %q, want %q mentioning %q", a.Code, a.Reason, tt.code, tt.reason)
			}
			for _, n := range ns {
				if want := slices.Contains(tt.candidates, n.Name); a.Announces(n.Name) != want {
					t.Errorf("Announces(%s) = %v, want %v", n.Name, !want, want)
				}
			}
		})
	}
}

func TestPlanReasonCodesARP(t *testing.T) {
	pools := map[string]*v1alpha1.IPPool{
		"main": pool("main", v1alpha1.AnnounceARP, nil, "192.0.2.0/24"),
		"sel":  pool("sel", "", &metav1.LabelSelector{MatchLabels: map[string]string{"x": "y"}}, "198.51.100.0/24"),
	}
	for _, tt := range []struct {
		name  string
		nodes []*v1.Node
		svc   *v1.Service
		alive func(string) bool
		code  string
	}{
		{"all excluded", []*v1.Node{node("a", "z", v1.LabelNodeExcludeBalancers, "true")}, svc("d", "s", "main", false, "192.0.2.1"), nil, ReasonAllExcluded},
		{"selector none", []*v1.Node{node("a", "z")}, svc("d", "s", "sel", false, "198.51.100.1"), nil, ReasonSelectorMatchesNone},
		{"no endpoint", []*v1.Node{node("a", "z")}, svc("d", "s", "main", true, "192.0.2.1"), nil, ReasonNoReadyEndpoint},
		{"none alive", []*v1.Node{node("a", "z")}, svc("d", "s", "main", false, "192.0.2.1"), func(string) bool { return false }, ReasonNoneAlive},
		{"no pool: announced with the defaults", []*v1.Node{node("a", "z")}, svc("d", "s", "main", false, "203.0.113.1"), nil, ""},
		{"no pool, every node excluded", []*v1.Node{node("a", "z", v1.LabelNodeExcludeBalancers, "")}, svc("d", "s", "main", false, "203.0.113.1"), nil, ReasonAllExcluded},
		{"no pool, not admitted", []*v1.Node{admits(node("a", "z"), "192.0.2.0/24")}, svc("d", "s", "main", false, "203.0.113.1"), nil, ReasonNotAdmitted},
		{"all leaving", []*v1.Node{leaving(node("a", "z")), leaving(node("b", "z"))}, svc("d", "s", "main", false, "192.0.2.1"), nil, ReasonAllLeaving},
		{"leaving or excluded", []*v1.Node{leaving(node("a", "z")), node("b", "z", v1.LabelNodeExcludeBalancers, "")}, svc("d", "s", "main", false, "192.0.2.1"), nil, ReasonAllExcluded},
		{"VM not located", []*v1.Node{admits(node("a", "z"), "-")}, svc("d", "s", "main", false, "192.0.2.1"), nil, ReasonNotAdmitted},
		{"VM admits other addresses", []*v1.Node{admits(node("a", "z"), "192.0.2.2-192.0.2.9")}, svc("d", "s", "main", false, "192.0.2.1"), nil, ReasonNotAdmitted},
		{"VM admits the address", []*v1.Node{admits(node("a", "z"), "192.0.2.0-192.0.2.9")}, svc("d", "s", "main", false, "192.0.2.1"), nil, ""},
		{"announced", []*v1.Node{node("a", "z")}, svc("d", "s", "main", false, "192.0.2.1"), nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			alive := tt.alive
			if alive == nil {
				alive = func(string) bool { return true }
			}
			got := Plan(Inputs{Services: []*v1.Service{tt.svc}, Pools: pools, Nodes: tt.nodes, Alive: alive})
			if len(got) != 1 || got[0].Code != tt.code || (tt.code == "") != (got[0].Winner != "") {
				t.Fatalf("got %+v, want code %q", got, tt.code)
			}
			if tt.code == "" && !got[0].Announces("a") {
				t.Errorf("winner a does not announce: %+v", got[0])
			}
		})
	}
}

// A node is a candidate only where its VM admits the address and it is not
// leaving, in ARP and BGP mode alike: elsewhere Proxmox may drop its replies.
func TestPlanOnlyWhereAdmitted(t *testing.T) {
	pools := map[string]*v1alpha1.IPPool{
		"arp": pool("arp", v1alpha1.AnnounceARP, nil, "192.0.2.0/24"),
		"bgp": pool("bgp", v1alpha1.AnnounceBGP, nil, "203.0.113.0/24"),
	}
	nodes := []*v1.Node{
		node("open", "pve1"),
		admits(node("new", "pve1"), "-"),
		admits(node("low", "pve2"), "192.0.2.0-192.0.2.15,203.0.113.0-203.0.113.15"),
		leaving(node("draining", "pve2")),
		func() *v1.Node {
			n := node("deleting", "pve3")
			now := metav1.Now()
			n.DeletionTimestamp = &now
			return n
		}(),
	}
	all := func(string) bool { return true }
	got := Plan(Inputs{Pools: pools, Nodes: nodes, Alive: all, Services: []*v1.Service{
		svc("d", "a", "arp", false, "192.0.2.5", "192.0.2.100"),
		svc("d", "b", "bgp", false, "203.0.113.5", "203.0.113.100"),
	}})
	want := map[string][]string{
		"192.0.2.5":     {"low", "open"},
		"192.0.2.100":   {"open"},
		"203.0.113.5":   {"low", "open"},
		"203.0.113.100": {"open"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d assignments, want %d: %+v", len(got), len(want), got)
	}
	for _, a := range got {
		if w := want[a.IP.String()]; !slices.Equal(a.Candidates, w) || a.Code != "" {
			t.Errorf("%s: candidates %v (code %q), want %v", a.IP, a.Candidates, a.Code, w)
		}
		if a.Mode == v1alpha1.AnnounceARP && !slices.Contains(want[a.IP.String()], a.Winner) {
			t.Errorf("%s: winner %q is not admitted", a.IP, a.Winner)
		}
	}
}

// TestPlanCanServe: a node that reports it cannot answer for a pool (its
// interface missing or down) is no candidate for that pool's addresses, and
// still one for others; when no node can, the reason says so.
func TestPlanCanServe(t *testing.T) {
	pools := map[string]*v1alpha1.IPPool{
		"main": pool("main", v1alpha1.AnnounceARP, nil, "192.0.2.0/24"),
		"side": pool("side", v1alpha1.AnnounceARP, nil, "198.51.100.0/24"),
		"bgp":  pool("bgp", v1alpha1.AnnounceBGP, nil, "203.0.113.0/25"),
	}
	pools["side"].Spec.Announce.Interfaces = []string{"eth1"}
	nodes := []*v1.Node{node("a", "z1"), node("b", "z2")}
	lacksSide := map[string]bool{"a": true}
	canServe := func(n, p string) bool { return !(p == "side" && lacksSide[n]) && p != "bgp" }
	alive := func(string) bool { return true }
	services := []*v1.Service{
		svc("d", "m", "main", false, "192.0.2.1"),
		svc("d", "s", "side", false, "198.51.100.1"),
		svc("d", "b", "bgp", false, "203.0.113.1"),
	}
	got := Plan(Inputs{Services: services, Pools: pools, Nodes: nodes, Alive: alive, CanServe: canServe})
	want := map[string][]string{"192.0.2.1": {"a", "b"}, "198.51.100.1": {"b"}, "203.0.113.1": {"a", "b"}}
	for _, a := range got {
		if !slices.Equal(a.Candidates, want[a.IP.String()]) {
			t.Errorf("%s: candidates %v, want %v (BGP ignores CanServe)", a.IP, a.Candidates, want[a.IP.String()])
		}
	}
	lacksSide["b"] = true
	got = Plan(Inputs{Services: services[1:2], Pools: pools, Nodes: nodes, Alive: alive, CanServe: canServe})
	if len(got) != 1 || got[0].Code != ReasonNoInterface || !strings.Contains(got[0].Reason, "eth1") {
		t.Fatalf("no node can serve: got %+v, want %s naming eth1", got, ReasonNoInterface)
	}
}
