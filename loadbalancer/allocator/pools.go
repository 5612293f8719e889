package allocator

import (
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// PoolFromAPI converts an IPPool object. Usable is set to true; the caller
// clears it for pools that Overlaps reports.
func PoolFromAPI(ip *v1alpha1.IPPool) (Pool, error) {
	rs, err := ParseRanges(ip.Spec.Addresses)
	if err != nil {
		return Pool{}, fmt.Errorf("IPPool %s: spec.%w", ip.Name, err)
	}
	p := Pool{
		Name:          ip.Name,
		Ranges:        rs,
		AutoAssign:    ip.Spec.AutoAssign == nil || *ip.Spec.AutoAssign,
		AvoidBuggyIPs: ip.Spec.AvoidBuggyIPs,
		Usable:        true,
	}
	if at := ip.Spec.AllocateTo; at != nil {
		p.Namespaces = append([]string(nil), at.Namespaces...)
		p.Priority = at.Priority
		if p.NamespaceSelector, err = selector(at.NamespaceSelector); err != nil {
			return Pool{}, fmt.Errorf("IPPool %s: spec.allocateTo.namespaceSelector: %w", ip.Name, err)
		}
		if p.ServiceSelector, err = selector(at.ServiceSelector); err != nil {
			return Pool{}, fmt.Errorf("IPPool %s: spec.allocateTo.serviceSelector: %w", ip.Name, err)
		}
	}
	return p, nil
}

// selector converts a LabelSelector; nil stays nil (matches everything).
func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return nil, nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// Overlaps returns, for each pool that shares an address with another pool,
// the sorted names of those other pools. Such pools are refused (Usable
// false): which pool an address "belongs" to would otherwise depend on
// ordering, and limits or announce settings could contradict each other.
func Overlaps(pools []Pool) map[string][]string {
	type span struct {
		r    Range
		pool string
	}
	var spans []span
	for _, p := range pools {
		for _, r := range p.Ranges {
			spans = append(spans, span{r, p.Name})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].r.First.Less(spans[j].r.First) })
	out := map[string][]string{}
	add := func(a, b string) {
		for _, x := range out[a] {
			if x == b {
				return
			}
		}
		out[a] = append(out[a], b)
	}
	// Sweep: compare each span with the following ones that start before it ends.
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			if spans[j].r.First.Is4() != spans[i].r.First.Is4() || spans[i].r.Last.Less(spans[j].r.First) {
				break
			}
			if spans[i].pool != spans[j].pool {
				add(spans[i].pool, spans[j].pool)
				add(spans[j].pool, spans[i].pool)
			}
		}
	}
	for k := range out {
		sort.Strings(out[k])
	}
	return out
}

// APIStatus converts usage to the IPPool status fields (nil for a family the
// pool does not have).
func (u PoolUsage) APIStatus() (ipv4, ipv6 *v1alpha1.FamilyUsage) {
	conv := func(f *FamilyUsage) *v1alpha1.FamilyUsage {
		if f == nil {
			return nil
		}
		return &v1alpha1.FamilyUsage{Total: f.Total.String(), Used: f.Used, Free: f.Free.String()}
	}
	return conv(u.IPv4), conv(u.IPv6)
}
