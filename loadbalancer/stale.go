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
func (c *Controller) changedMeanwhile(svc *v1.Service) bool {
	if c.services == nil {
		return false
	}
	live, err := c.services.Services(svc.Namespace).Get(svc.Name)
	if err != nil {
		return true // deleted meanwhile
	}
	if live.UID != svc.UID || (live.DeletionTimestamp == nil) != (svc.DeletionTimestamp == nil) ||
		live.Spec.Type != svc.Spec.Type || ptr.Deref(live.Spec.LoadBalancerClass, "") != ptr.Deref(svc.Spec.LoadBalancerClass, "") {
		return true
	}
	was, errWas := c.toRequest(svc)
	now, errNow := c.toRequest(live)
	if (errWas == nil) != (errNow == nil) {
		return true
	}
	was.Selector, was.Labels, now.Selector, now.Labels = nil, nil, nil, nil
	return !reflect.DeepEqual(was, now)
}
