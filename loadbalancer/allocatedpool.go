package loadbalancer

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/names"
)

// allocatedPoolValue is the names.AnnotationAllocatedPool value for a Service
// holding addresses that belong to pools (pools[i] is "" for an address no
// pool holds): the pools' names, each once, in address order. remove is true
// when the Service holds nothing. While no pool holds any of its addresses
// the recorded value have (present says whether there is one) is kept, the
// pools they came from: the annotation marks pvelb's addresses for the
// announcer, the class controller and pvelbctl, so it must last as long as
// the addresses do.
func allocatedPoolValue(pools []string, have string, present bool) (want string, remove bool) {
	if len(pools) == 0 {
		return "", true
	}
	var names []string
	for _, p := range pools {
		if p != "" && !slices.Contains(names, p) {
			names = append(names, p)
		}
	}
	if len(names) == 0 && present {
		return have, false
	}
	return strings.Join(names, ","), false
}

// allocatedPoolPatch is a merge patch setting (or removing) the annotation.
// A resourceVersion makes it conditional: the apiserver refuses it with a
// Conflict once the Service changed.
func allocatedPoolPatch(want string, remove bool, resourceVersion string) []byte {
	var value any = want
	if remove {
		value = nil
	}
	meta := map[string]any{"annotations": map[string]any{names.AnnotationAllocatedPool: value}}
	if resourceVersion != "" {
		meta["resourceVersion"] = resourceVersion
	}
	b, _ := json.Marshal(map[string]any{"metadata": meta}) // strings and nil only
	return b
}

// syncAllocatedPools keeps names.AnnotationAllocatedPool in line with the
// pools the Services' addresses belong to now. Only a pool change moves
// that: an IPPool renamed over the same range, shrunk or deleted keeps its
// addresses on their Services, and nothing calls EnsureLoadBalancer for
// them. It runs after pool changes, debounced like the IPPool status, and
// once after start for changes made while pvelb-ccm was down.
//
// It writes the annotation of every Service whose value changes, and only
// those, so a pool change costs one write per Service it concerns. It
// reports whether some write must be retried.
func (c *Controller) syncAllocatedPools(ctx context.Context) (retry bool) {
	type holding struct {
		key   allocator.ServiceKey
		ips   []netip.Addr
		pools []string
	}
	c.mu.Lock()
	all := make([]holding, 0, len(c.assigned))
	for _, k := range sortedServiceKeys(c.assigned) {
		h := holding{key: k, ips: c.assigned[k]}
		for _, a := range h.ips {
			h.pools = append(h.pools, c.alloc.PoolOf(a))
		}
		all = append(all, h)
	}
	c.mu.Unlock()
	for _, h := range all {
		svc, err := c.services.Services(h.key.Namespace).Get(h.key.Name)
		if err != nil || svc.DeletionTimestamp != nil || !c.serves(svc) || !sameAddrs(ingressIPs(svc), h.ips) {
			continue // gone or going, or an ensure in flight records the pools itself
		}
		have, ok := names.AllocatedPool(svc)
		want, remove := allocatedPoolValue(h.pools, have, ok)
		if remove || (ok && have == want) {
			continue
		}
		// Conditional on the Service as read: one released or ensured
		// since is left to that path, which records its own value.
		if err := c.fence.check(); err != nil {
			klog.V(2).InfoS("Not recording pools", "err", err)
			return true
		}
		_, err = c.kube.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType,
			allocatedPoolPatch(want, false, svc.ResourceVersion), metav1PatchOptions)
		switch {
		case err == nil:
			klog.InfoS("Recorded the pools the addresses belong to after an IPPool change", "service", klog.KObj(svc), "pools", want, "was", have)
		case apierrors.IsNotFound(err):
		case apierrors.IsConflict(err):
			retry = true // read again from a fresher cache
		default:
			klog.ErrorS(err, "Recording annotation failed; retrying", "service", klog.KObj(svc), "annotation", names.AnnotationAllocatedPool)
			retry = true
		}
	}
	return retry
}

// sameAddrs reports whether a and b hold the same addresses, in any order.
func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}
