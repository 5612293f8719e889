package loadbalancer

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
)

// poolState is one IPPool as pvelb understands it.
type poolState struct {
	obj *v1alpha1.IPPool
	// alloc is the allocator's view; Usable is false when the pool is refused.
	alloc allocator.Pool
	view  poolView
	// err explains why the pool cannot be used at all (bad spec that slipped
	// past admission); overlaps names the pools it overlaps.
	err      error
	overlaps []string
}

// buildPools turns IPPools into allocator pools and firewall views, refusing
// (Usable=false) pools with an invalid spec and every pool that overlaps
// another: picking one of two overlapping pools silently would make
// allocation depend on event order.
func buildPools(objs []*v1alpha1.IPPool) map[string]*poolState {
	out := make(map[string]*poolState, len(objs))
	var valid []allocator.Pool
	for _, o := range objs {
		ps := &poolState{obj: o, view: poolView{Name: o.Name}}
		out[o.Name] = ps
		p, err := allocator.PoolFromAPI(o)
		if err != nil {
			ps.err = err
			p = allocator.Pool{Name: o.Name}
		}
		if ps.view.Selector, err = selector(o.Spec.Announce.NodeSelector); err != nil && ps.err == nil {
			ps.err = fmt.Errorf("IPPool %s: spec.announce.nodeSelector: %w", o.Name, err)
		}
		for _, r := range p.Ranges {
			ps.view.Ranges = append(ps.view.Ranges, firewall.PoolRange{Pool: o.Name, First: r.First, Last: r.Last})
		}
		p.Usable = ps.err == nil
		ps.alloc = p
		valid = append(valid, p)
	}
	for name, others := range allocator.Overlaps(valid) {
		if ps := out[name]; ps != nil {
			ps.overlaps = others
			ps.alloc.Usable = false
		}
	}
	return out
}

func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// poolOfAddr returns the usable-or-not pool holding a, by allocator.Holding:
// the pool the annotation records and the announcer announces a by, so that
// the firewall admits a on the nodes of that same pool.
func poolOfAddr(pools map[string]*poolState, a netip.Addr) string {
	ps := make([]allocator.Pool, 0, len(pools))
	for _, p := range pools {
		ps = append(ps, p.alloc)
	}
	return allocator.Holding(ps, a)
}

// poolConditions computes an IPPool's Ready and Overlapping conditions.
func poolConditions(ps *poolState) []metav1.Condition {
	ready := metav1.Condition{Type: v1alpha1.IPPoolReady, Status: metav1.ConditionTrue, Reason: "Ready",
		Message: "the pool is used for allocation", ObservedGeneration: ps.obj.Generation}
	over := metav1.Condition{Type: v1alpha1.IPPoolOverlapping, Status: metav1.ConditionFalse, Reason: "NoOverlap",
		Message: "no other IPPool shares an address with this one", ObservedGeneration: ps.obj.Generation}
	if len(ps.overlaps) > 0 {
		o := slices.Clone(ps.overlaps)
		slices.Sort(o)
		over.Status, over.Reason = metav1.ConditionTrue, "Overlapping"
		over.Message = fmt.Sprintf("addresses overlap IPPool(s) %s; both are refused for new allocations until the overlap is removed (addresses already handed out are kept)", strings.Join(o, ", "))
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "Overlapping", over.Message
	}
	if ps.err != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "InvalidSpec", ps.err.Error()
	}
	return []metav1.Condition{ready, over}
}
