package loadbalancer

import (
	"errors"
	"reflect"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// errChangedMeanwhile fails an ensure whose Service was edited while its
// addresses were assigned; the edit has queued the Service again already.
var errChangedMeanwhile = errors.New("the Service was edited while its addresses were assigned; it is synced again with the edit")

// changedMeanwhile reports whether the Service as the informer holds it now
// asks for something else than svc, the copy an ensure started from. The
// service controller writes the returned status unconditionally, so a
// status computed from the old copy could show an address the Service may
// not hold as it is now (its sharing key or ports changed) until that
// controller's next sync of it, seconds away after a leader change.
//
// Only what decides addresses is compared, and only what the service
// controller queues a Service again for (labels and selector are not: a
// failure for them would wait out its retry backoff).
//
// svc must be the copy as the ensure got it: pvelb's own writes update the
// caller's copy in place, and a write made again onto the current version
// after a Conflict would carry the edit into it.
func (c *Controller) changedMeanwhile(svc *v1.Service) bool {
	if c.services == nil {
		return false
	}
	live, err := c.services.Services(svc.Namespace).Get(svc.Name)
	if err != nil {
		return true // deleted meanwhile
	}
	return c.asksDiffer(svc, live)
}

// asksDiffer reports whether now, a later version of the Service was, asks
// for other addresses: another Service, deleted, another type or class, or
// another allocation request.
func (c *Controller) asksDiffer(was, now *v1.Service) bool {
	if now.UID != was.UID || (now.DeletionTimestamp == nil) != (was.DeletionTimestamp == nil) ||
		now.Spec.Type != was.Spec.Type || ptr.Deref(now.Spec.LoadBalancerClass, "") != ptr.Deref(was.Spec.LoadBalancerClass, "") {
		return true
	}
	before, errBefore := c.toRequest(was)
	after, errAfter := c.toRequest(now)
	if (errBefore == nil) != (errAfter == nil) {
		return true
	}
	before.Selector, before.Labels, after.Selector, after.Labels = nil, nil, nil, nil
	return !reflect.DeepEqual(before, after)
}
