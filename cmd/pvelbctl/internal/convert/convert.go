// Package convert turns another load balancer's configuration (MetalLB's or
// Cilium LB-IPAM's custom resources) into pvelb's IPPools and BGPPeers for
// `pvelbctl import`, with a Note for every setting pvelb has no equivalent
// for, saying what happens to it. It is pure: the objects come in decoded
// (FromObjects) and go out as values; reading and applying are the
// command's.
package convert

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// Note is one setting pvelb has no equivalent for, and what happens to it.
type Note struct {
	Object  string // Kind/name of the source object
	Setting string // the field, as the source spells it
	Effect  string
}

func (n Note) String() string { return fmt.Sprintf("%s %s: %s", n.Object, n.Setting, n.Effect) }

// Result is the converted configuration.
type Result struct {
	Pools []v1alpha1.IPPool
	Peers []v1alpha1.BGPPeer
	Notes []Note
}

func (r *Result) note(object, setting, format string, args ...any) {
	r.Notes = append(r.Notes, Note{Object: object, Setting: setting, Effect: fmt.Sprintf(format, args...)})
}

// decode converts objects into typed items, naming the object at fault.
func decode[T any](kind string, objs []unstructured.Unstructured) ([]T, error) {
	out := make([]T, 0, len(objs))
	for i := range objs {
		var v T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[i].Object, &v); err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, objs[i].GetName(), err)
		}
		out = append(out, v)
	}
	return out, nil
}

func newPool(name string) v1alpha1.IPPool {
	return v1alpha1.IPPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "IPPool"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}
}

func newPeer(name string) v1alpha1.BGPPeer {
	return v1alpha1.BGPPeer{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "BGPPeer"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}
}

// cidr writes a prefix as pvelb takes it: the network address (MetalLB and
// Cilium read a prefix with host bits set as its network too).
func cidr(s string) (string, bool) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return "", false
	}
	return p.Masked().String(), true
}

// addrRange writes first-last, or a single address as a /32 or /128.
func addrRange(first, last string) (string, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil {
		return "", false
	}
	if strings.TrimSpace(last) == "" {
		return netip.PrefixFrom(a, a.BitLen()).String(), true
	}
	b, err := netip.ParseAddr(strings.TrimSpace(last))
	if err != nil || a.Is4() != b.Is4() || b.Less(a) {
		return "", false
	}
	if a == b {
		return netip.PrefixFrom(a, a.BitLen()).String(), true
	}
	return a.String() + "-" + b.String(), true
}

// oneSelector returns the selector pvelb can hold from a list the source
// ORs, noting what is lost: none means any, one is kept, more keep the
// first.
func (r *Result) oneSelector(object, setting string, sels []metav1.LabelSelector, lost string) *metav1.LabelSelector {
	switch len(sels) {
	case 0:
		return nil
	case 1:
		s := sels[0]
		return &s
	}
	r.note(object, setting, "%d selectors, which the source ORs; pvelb takes one: the first is kept, %s", len(sels), lost)
	s := sels[0]
	return &s
}

func sortPools(ps []v1alpha1.IPPool) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}

func sortPeers(ps []v1alpha1.BGPPeer) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}

func union(a []string, b ...string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}
