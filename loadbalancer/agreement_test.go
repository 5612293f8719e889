package loadbalancer

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/pvelb/pvelb/announcer"
	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
)

// The firewall and the announcer agree on who may announce: given one Node
// list, pvelb-ccm's SelectNodes and the announcer's Plan name the same nodes
// for every VIP once pvelb-ccm has published what each VM admits, and the
// announcer never names a node whose VM has not admitted the VIP yet. The
// Nodes cover each way to be left out: deleting, autoscaler-tainted,
// excluded, not selected, no providerID yet, a foreign providerID, and a VM
// whose admission has not succeeded yet.
func TestSelectNodesAndPlanAgree(t *testing.T) {
	now := metav1.Now()
	withID := func(id string) func(*v1.Node) { return func(n *v1.Node) { n.Spec.ProviderID = id } }
	edge := map[string]string{"role": "edge"}
	nodes := []*v1.Node{
		node("ok1", nil, withID("proxmox://lab/101")),
		node("ok2", edge, withID("proxmox://lab/102")),
		node("deleting", edge, withID("proxmox://lab/103"), func(n *v1.Node) { n.DeletionTimestamp = &now; n.Finalizers = []string{"x"} }),
		node("tainted", edge, withID("proxmox://lab/104"), func(n *v1.Node) {
			n.Spec.Taints = []v1.Taint{{Key: eligibility.ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}
		}),
		node("excluded", map[string]string{v1.LabelNodeExcludeBalancers: ""}, withID("proxmox://lab/105")),
		// A stale annotation from before must not make it eligible.
		node("no-id", nil, func(n *v1.Node) {
			n.Annotations = map[string]string{names.AnnotationAdmitted: eligibility.Unfiltered}
		}),
		node("foreign", nil, withID("aws:///us-east-1a/i-0123")),
		node("other-cluster", nil, withID("proxmox://elsewhere/101")),
		node("gone-vm", nil, withID("proxmox://lab/199")),
		node("failing", nil, withID("proxmox://lab/106")),
	}
	ippools := []*v1alpha1.IPPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "main"}, Spec: v1alpha1.IPPoolSpec{Addresses: []string{"192.0.2.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Spec: v1alpha1.IPPoolSpec{Addresses: []string{"198.51.100.0/24"},
			Announce: v1alpha1.Announce{NodeSelector: &metav1.LabelSelector{MatchLabels: edge}}}},
	}
	vips := map[string][]string{"main": {"192.0.2.10", "192.0.2.11"}, "edge": {"198.51.100.10"}}

	for _, tc := range []struct {
		name     string
		firewall bool
		// candidates per pool after the first pass, in which VM 106's
		// admission failed, and after a second one that succeeded.
		first, second map[string][]string
	}{
		{"firewall managed", true,
			map[string][]string{"main": {"ok1", "ok2"}, "edge": {"ok2"}},
			map[string][]string{"main": {"failing", "ok1", "ok2"}, "edge": {"ok2"}}},
		{"firewall off: VMs do not matter", false,
			map[string][]string{"main": {"failing", "foreign", "gone-vm", "no-id", "ok1", "ok2", "other-cluster"}, "edge": {"ok2"}},
			map[string][]string{"main": {"failing", "foreign", "gone-vm", "no-id", "ok1", "ok2", "other-cluster"}, "edge": {"ok2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var vms []pve.VMResource
			for id := 101; id <= 106; id++ {
				vms = append(vms, pve.VMResource{Type: "qemu", VMID: id, Node: "pve1"})
			}
			c, err := New(Options{Clients: map[string]pve.Client{"lab": &listingClient{vms: vms}},
				Firewall: config.Firewall{Enabled: tc.firewall}, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			e := newWriterEnv(t, nodes...)
			c.nodes, c.admitted = corelisters.NewNodeLister(e.idx), e.w
			c.pools = buildPools(ippools)
			var services []*v1.Service
			for pool, ips := range vips {
				svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "d", Name: pool,
					Annotations: map[string]string{names.AnnotationAllocatedPool: pool}},
					Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer}}
				var addrs []netip.Addr
				for _, ip := range ips {
					addrs = append(addrs, netip.MustParseAddr(ip))
					svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
				}
				c.assigned[allocator.ServiceKey{Namespace: "d", Name: pool}] = addrs
				services = append(services, svc)
			}
			announcerPools := map[string]*v1alpha1.IPPool{}
			for _, p := range ippools {
				announcerPools[p.Name] = p
			}

			// pass computes the desired state, simulates a reconcile pass in
			// which the VMs of the failing Nodes could not be written, lets
			// pvelb-ccm publish the result, and returns the Nodes as the
			// announcer then sees them.
			pass := func(failing ...string) []*v1.Node {
				c.syncDesired(context.Background())
				if c.fw != nil {
					var res firewall.Result
					for _, vm := range c.lastDesired.VMs {
						s := firewall.ScopeResult{Region: vm.Region, VM: &firewall.VMInfo{Ref: vm.Ref, Node: vm.Node}}
						if !slices.Contains(failing, vm.Node) {
							s.Admission = &firewall.Admission{Prefixes: []netip.Prefix{}}
							for _, a := range vm.VIPs {
								s.Admission.Prefixes = append(s.Admission.Prefixes, netip.PrefixFrom(a, a.BitLen()))
							}
						}
						res.Scopes = append(res.Scopes, s)
					}
					c.onFirewallResult(res)
				}
				e.drain()
				out, err := c.nodes.List(labels.Everything())
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			check := func(step string, seen []*v1.Node, want map[string][]string, notYet ...string) {
				t.Helper()
				located := func(n *v1.Node) bool { _, ok := c.nodeVMs[n.Name]; return ok }
				if c.fw == nil {
					located = nil
				}
				plan := announcer.Plan(announcer.Inputs{Services: services, Pools: announcerPools, Nodes: seen,
					Alive: func(string) bool { return true }})
				if len(plan) != 3 {
					t.Fatalf("%s: %d assignments, want 3: %+v", step, len(plan), plan)
				}
				for _, a := range plan {
					if !slices.Equal(a.Candidates, want[a.Pool]) {
						t.Errorf("%s: announcer candidates for %s: %v, want %v (code %q)", step, a.IP, a.Candidates, want[a.Pool], a.Code)
					}
					sel := c.pools[a.Pool].view.Selector
					ccm := slices.DeleteFunc(nodeNames(SelectNodes(seen, sel, located).Eligible), func(n string) bool { return slices.Contains(notYet, n) })
					if !slices.Equal(a.Candidates, ccm) {
						t.Errorf("%s: for %s the announcer elects among %v, pvelb-ccm admits on %v", step, a.IP, a.Candidates, ccm)
					}
				}
			}
			if tc.firewall {
				check("first pass", pass("failing"), tc.first, "failing")
			} else {
				check("first pass", pass(), tc.first)
			}
			check("second pass", pass(), tc.second)
		})
	}
}
