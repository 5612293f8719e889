package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/names"
)

// Another load balancer on the same addresses is a second responder: MetalLB
// or Cilium answering ARP for a pvelb VIP, or handing out an address of a
// pvelb pool. doctor reads their resources where their CRDs are installed.

// OthersArea groups these findings.
const OthersArea = "other load balancers"

var (
	metallbPools = schema.GroupVersionResource{Group: "metallb.io", Version: "v1beta1", Resource: "ipaddresspools"}
	ciliumPools  = []schema.GroupVersionResource{
		{Group: "cilium.io", Version: "v2", Resource: "ciliumloadbalancerippools"},
		{Group: "cilium.io", Version: "v2alpha1", Resource: "ciliumloadbalancerippools"},
	}
	ciliumL2 = []schema.GroupVersionResource{
		{Group: "cilium.io", Version: "v2", Resource: "ciliuml2announcementpolicies"},
		{Group: "cilium.io", Version: "v2alpha1", Resource: "ciliuml2announcementpolicies"},
	}
)

// ForeignPool is another implementation's address pool.
type ForeignPool struct {
	Kind, Name string // e.g. "MetalLB IPAddressPool", "metallb-system/default"
	Ranges     []allocator.Range
}

// L2Policy is a Cilium L2 announcement policy that announces Service
// load-balancer IPs.
type L2Policy struct {
	Name     string
	Selector labels.Selector // nil: every Service
}

// PoolRange is one range of a pvelb IPPool.
type PoolRange struct {
	Pool  string
	Range allocator.Range
}

// AssessOthers names foreign pools that overlap pvelb's and Cilium L2
// policies that select Services holding pvelb VIPs.
func AssessOthers(ours []PoolRange, foreign []ForeignPool, policies []L2Policy, services []corev1.Service) []Finding {
	var out []Finding
	for _, f := range foreign {
		var hit []string
		for _, fr := range f.Ranges {
			for _, o := range ours {
				if fr.First.Is4() == o.Range.First.Is4() && fr.First.Compare(o.Range.Last) <= 0 && o.Range.First.Compare(fr.Last) <= 0 {
					hit = append(hit, fmt.Sprintf("%s (IPPool %s) with %s", o.Range, o.Pool, fr))
				}
			}
		}
		if len(hit) > 0 {
			out = append(out, Finding{Severity: Fail, Area: OthersArea,
				Message: fmt.Sprintf("%s %s overlaps pvelb's pools: %s; both may hand out an address and answer for it", f.Kind, f.Name, strings.Join(hit, "; ")),
				Fix:     "make the ranges disjoint, or remove the other pool (one implementation per address)"})
		}
	}
	inOurs := func(a netip.Addr) bool {
		return slices.ContainsFunc(ours, func(o PoolRange) bool { return o.Range.Contains(a) })
	}
	for _, p := range policies {
		var hit []string
		for _, s := range services {
			if s.Spec.Type != corev1.ServiceTypeLoadBalancer || (p.Selector != nil && !p.Selector.Matches(labels.Set(s.Labels))) {
				continue
			}
			for _, in := range s.Status.LoadBalancer.Ingress {
				if a, err := netip.ParseAddr(in.IP); err == nil && inOurs(a.Unmap()) {
					hit = append(hit, s.Namespace+"/"+s.Name+" ("+in.IP+")")
					break
				}
			}
		}
		if len(hit) > 0 {
			out = append(out, Finding{Severity: Fail, Area: OthersArea,
				Message: fmt.Sprintf("CiliumL2AnnouncementPolicy %s selects Services whose VIPs pvelb announces: %s; Cilium answers ARP for them too", p.Name, strings.Join(hit, ", ")),
				Fix:     "narrow the policy's spec.serviceSelector to Services Cilium serves (e.g. a label pvelb's Services lack), or set loadBalancerIPs: false"})
		}
	}
	return out
}

// CheckOthers reads pvelb's IPPools, MetalLB's and Cilium's pools and
// Cilium's L2 announcement policies (where their CRDs exist) and adds
// AssessOthers' findings.
func CheckOthers(ctx context.Context, dyn dynamic.Interface, kube kubernetes.Interface, r *Report) {
	list, err := dyn.Resource(names.IPPools).List(ctx, metav1.ListOptions{})
	if err != nil {
		return // CheckKubernetes reports it
	}
	var pools []PoolRange
	for i := range list.Items {
		p, err := names.IPPool(&list.Items[i])
		if err != nil {
			continue
		}
		rs, _ := allocator.ParseRanges(p.Spec.Addresses)
		for _, rg := range rs {
			pools = append(pools, PoolRange{Pool: p.Name, Range: rg})
		}
	}
	checkOthers(ctx, dyn, kube, pools, r)
}

func checkOthers(ctx context.Context, dyn dynamic.Interface, kube kubernetes.Interface, pools []PoolRange, r *Report) {
	var foreign []ForeignPool
	var policies []L2Policy
	read := 0
	if list, err := dyn.Resource(metallbPools).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{}); err == nil {
		read++
		for _, u := range list.Items {
			addrs, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "addresses")
			rs, _ := allocator.ParseRanges(addrs)
			foreign = append(foreign, ForeignPool{Kind: "MetalLB IPAddressPool", Name: u.GetNamespace() + "/" + u.GetName(), Ranges: rs})
		}
	} else if !absent(err) {
		r.add(Warn, OthersArea, "", "reading MetalLB IPAddressPools: %v", err)
	}
	if list, err := listFirst(ctx, dyn, ciliumPools); err == nil && list != nil {
		read++
		for _, u := range list.Items {
			blocks, _, _ := unstructured.NestedSlice(u.Object, "spec", "blocks")
			var rs []allocator.Range
			for _, b := range blocks {
				m, _ := b.(map[string]any)
				cidr, _ := m["cidr"].(string)
				start, _ := m["start"].(string)
				stop, _ := m["stop"].(string)
				spec := cidr
				if spec == "" && start != "" {
					spec = start + "-" + stop
					if stop == "" {
						spec = start
					}
				}
				if rg, err := allocator.ParseRange(spec); err == nil {
					rs = append(rs, rg)
				}
			}
			foreign = append(foreign, ForeignPool{Kind: "CiliumLoadBalancerIPPool", Name: u.GetName(), Ranges: rs})
		}
	} else if err != nil {
		r.add(Warn, OthersArea, "", "reading CiliumLoadBalancerIPPools: %v", err)
	}
	if list, err := listFirst(ctx, dyn, ciliumL2); err == nil && list != nil {
		read++
		for _, u := range list.Items {
			if on, found, _ := unstructured.NestedBool(u.Object, "spec", "loadBalancerIPs"); found && !on {
				continue
			}
			p := L2Policy{Name: u.GetName()}
			if m, found, _ := unstructured.NestedMap(u.Object, "spec", "serviceSelector"); found {
				var ls metav1.LabelSelector
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &ls); err == nil {
					p.Selector, _ = metav1.LabelSelectorAsSelector(&ls)
				}
			}
			policies = append(policies, p)
		}
	} else if err != nil {
		r.add(Warn, OthersArea, "", "reading CiliumL2AnnouncementPolicies: %v", err)
	}
	if read == 0 {
		return // neither MetalLB nor Cilium's load balancing is installed
	}
	var services []corev1.Service
	if len(policies) > 0 {
		list, err := kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.add(Warn, OthersArea, "", "listing Services: %v", err)
		} else {
			services = list.Items
		}
	}
	found := AssessOthers(pools, foreign, policies, services)
	if len(found) == 0 {
		found = append(found, Finding{Severity: OK, Area: OthersArea,
			Message: fmt.Sprintf("%d other pool(s) and %d Cilium L2 policy(ies) leave pvelb's addresses alone", len(foreign), len(policies))})
	}
	r.Findings = append(r.Findings, found...)
}

// listFirst lists the first of the versions the apiserver serves; nil with
// no error when none is installed.
func listFirst(ctx context.Context, dyn dynamic.Interface, gvrs []schema.GroupVersionResource) (*unstructured.UnstructuredList, error) {
	for _, gvr := range gvrs {
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err == nil {
			return list, nil
		}
		if !absent(err) {
			return nil, err
		}
	}
	return nil, nil
}

// absent: the resource is not served (its CRD is not installed).
func absent(err error) bool {
	return apierrors.IsNotFound(err) || meta.IsNoMatchError(err)
}
