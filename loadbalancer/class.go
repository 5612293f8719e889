package loadbalancer

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/names"
)

const classWorkers = 4

// classController serves Services of loadBalancerClass pvelb.io/loadbalancer,
// which the cloud-provider service controller leaves alone. It mirrors that
// controller, with its own cleanup finalizer (names.FinalizerClass, see there
// why not the standard one) before allocating, the status patched with
// ipMode VIP, the status cleared and the finalizer removed after releasing.
// Every write is conditional on the Service as read. Services of any other
// class are never touched.
type classController struct {
	lb     *Controller
	lister corelisters.ServiceLister
	queue  workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// owned are Services this controller allocated for: a Service whose type
	// changes away from LoadBalancer loses its class (the apiserver clears
	// it), and must still be cleaned up.
	owned map[string]bool
	// gone holds the last state of deleted owned Services until released.
	gone map[string]*v1.Service
	// failed are Services whose last ensure failed; a pool change retries them
	// at once instead of waiting out the backoff.
	failed map[string]bool
}

func newClassController(lb *Controller, inf coreinformers.ServiceInformer) *classController {
	cc := &classController{
		lb:     lb,
		lister: inf.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 2*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pvelb-class"}),
		owned:  map[string]bool{},
		gone:   map[string]*v1.Service{},
		failed: map[string]bool{},
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { cc.maybeEnqueue(o) },
		UpdateFunc: func(_, n any) { cc.maybeEnqueue(n) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			svc, ok := o.(*v1.Service)
			if !ok {
				return
			}
			k := svc.Namespace + "/" + svc.Name
			cc.mu.Lock()
			owned := cc.owned[k] || names.IsClass(svc)
			if owned {
				cc.gone[k] = svc
			}
			cc.mu.Unlock()
			if owned {
				cc.queue.Add(k)
			}
		},
	})
	return cc
}

// leftBehind reports a Service that stopped being a LoadBalancer while no
// pvelb-ccm ran: the apiserver then clears its class, so only pvelb's
// annotation and the finalizer say it was ours. Without this its finalizer
// and addresses would stay until someone removed them by hand. The standard
// finalizer counts too (class Services carried it before
// names.FinalizerClass) when no service controller runs to remove it
// (classless false); when one runs, it is that controller's.
// cleanupOwed: this controller must clean the Service up whatever it is now,
// because it still carries pvelb's class finalizer (durable, unlike the
// owned map of one replica: a Service switched away from the class while no
// leader ran is otherwise never released and, once deleted, never goes),
// or it was left behind (leftBehind).
func (cc *classController) cleanupOwed(svc *v1.Service) bool {
	return hasFinalizer(svc, names.FinalizerClass) || leftBehind(svc, cc.lb.ServesClassless())
}

func leftBehind(svc *v1.Service, classless bool) bool {
	_, annotated := names.AllocatedPool(svc)
	return annotated && svc.Spec.Type != v1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass == nil &&
		(hasFinalizer(svc, names.FinalizerClass) || (!classless && servicehelper.HasLBFinalizer(svc)))
}

func hasFinalizer(svc *v1.Service, f string) bool {
	for _, x := range svc.Finalizers {
		if x == f {
			return true
		}
	}
	return false
}

func (cc *classController) maybeEnqueue(o any) {
	svc, ok := o.(*v1.Service)
	if !ok {
		return
	}
	k := svc.Namespace + "/" + svc.Name
	cc.mu.Lock()
	owned := cc.owned[k]
	cc.mu.Unlock()
	if names.IsClass(svc) || owned || cc.cleanupOwed(svc) || cc.lb.leftToClass(svc) {
		cc.queue.Add(k)
	}
}

// requeueUnassigned retries Services whose allocation failed (a pool changed).
func (cc *classController) requeueUnassigned() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for k := range cc.failed {
		cc.queue.Add(k)
	}
}

func (cc *classController) run(ctx context.Context) {
	defer cc.queue.ShutDown()
	for range classWorkers {
		go wait.UntilWithContext(ctx, cc.worker, time.Second)
	}
	<-ctx.Done()
}

func (cc *classController) worker(ctx context.Context) {
	for {
		k, quit := cc.queue.Get()
		if quit {
			return
		}
		err := cc.sync(ctx, k)
		cc.mu.Lock()
		if err != nil {
			cc.failed[k] = true
		} else {
			delete(cc.failed, k)
		}
		cc.mu.Unlock()
		if err != nil {
			klog.InfoS("Class LoadBalancer sync failed; retrying", "service", k, "err", err)
			cc.queue.AddRateLimited(k)
		} else {
			cc.queue.Forget(k)
		}
		cc.queue.Done(k)
	}
}

func (cc *classController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := cc.lister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		cc.mu.Lock()
		last := cc.gone[key]
		cc.mu.Unlock()
		if last != nil {
			stub := last.DeepCopy()
			now := metav1.Now()
			stub.DeletionTimestamp = &now // gone: no annotation to clean
			// Gone, so no controller will act on it again, whatever
			// finalizers its last copy listed (a delete event may carry
			// them): the service controller, which releases nothing of a
			// Service of a class, left what it held to this controller
			// (leftByServiceController).
			stub.Finalizers = nil
			if _, err := cc.lb.release(ctx, stub, viaClass, true); err != nil {
				return err
			}
		}
		cc.mu.Lock()
		delete(cc.gone, key)
		delete(cc.owned, key)
		cc.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	svc = svc.DeepCopy()
	cc.mu.Lock()
	owned := cc.owned[key] || cc.cleanupOwed(svc)
	cc.mu.Unlock()
	owned = owned || cc.lb.leftToClass(svc)
	mine := names.IsClass(svc)
	if !mine && !owned {
		return nil // another class, or class-less: never touched here
	}

	if svc.DeletionTimestamp != nil || svc.Spec.Type != v1.ServiceTypeLoadBalancer || !mine {
		released, err := cc.lb.release(ctx, svc, viaClass, false)
		if err != nil {
			return err
		}
		// The status is cleared before the finalizer goes, deleting or
		// not: the addresses stay reserved while a status shows them, and
		// another finalizer may keep the Service for long. A Service whose
		// addresses the service controller holds now is its to write.
		if released && len(svc.Status.LoadBalancer.Ingress) > 0 {
			if err := cc.patch(ctx, svc, func(s *v1.Service) { s.Status.LoadBalancer = v1.LoadBalancerStatus{} }); err != nil {
				return fmt.Errorf("clearing load balancer status: %w", err)
			}
		}
		drop := []string{names.FinalizerClass}
		if mine || (released && !cc.lb.ServesClassless()) {
			drop = append(drop, names.FinalizerService) // left by older versions
		}
		if hasAny(svc.Finalizers, drop) {
			if err := cc.patch(ctx, svc, func(s *v1.Service) { s.Finalizers = without(s.Finalizers, drop...) }); err != nil {
				return fmt.Errorf("removing finalizer: %w", err)
			}
		}
		if owned && released {
			cc.lb.event(svc, v1.EventTypeNormal, "DeletedLoadBalancer", "released the load balancer addresses")
		}
		cc.mu.Lock()
		delete(cc.owned, key)
		cc.mu.Unlock()
		return nil
	}

	// Our finalizer, and not the standard one: a pvelb-class Service with
	// the standard finalizer is one the service controller may take its
	// delete path for (see names.FinalizerClass).
	if !hasFinalizer(svc, names.FinalizerClass) || servicehelper.HasLBFinalizer(svc) {
		if err := cc.patch(ctx, svc, func(s *v1.Service) {
			s.Finalizers = append(without(s.Finalizers, names.FinalizerService, names.FinalizerClass), names.FinalizerClass)
		}); err != nil {
			return fmt.Errorf("adding finalizer: %w", err)
		}
	}
	cc.mu.Lock()
	cc.owned[key] = true
	cc.mu.Unlock()
	st, err := cc.lb.ensure(ctx, svc, viaClass)
	if err != nil {
		return err
	}
	if servicehelper.LoadBalancerStatusEqual(&svc.Status.LoadBalancer, st) {
		cc.lb.maybeCheckLeaving(svc)
		return nil
	}
	if err := cc.patch(ctx, svc, func(s *v1.Service) { s.Status.LoadBalancer = *st }); err != nil {
		return fmt.Errorf("updating load balancer status: %w", err)
	}
	cc.lb.event(svc, v1.EventTypeNormal, "EnsuredLoadBalancer", "Ensured load balancer")
	return nil
}

// patch applies change to a copy of svc and writes the difference,
// conditional on svc's resourceVersion (see conditionalPatch); svc becomes
// the Service as written, so that the next write is conditional on this
// one. The allocator learns what the status shows now.
func (cc *classController) patch(ctx context.Context, svc *v1.Service, change func(*v1.Service)) error {
	updated := svc.DeepCopy()
	change(updated)
	got, err := cc.lb.patchService(ctx, svc, updated)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	*svc = *got
	cc.lb.shown(keyOf(got), ingressIPs(got))
	return nil
}

func hasAny(list, of []string) bool {
	for _, x := range list {
		for _, y := range of {
			if x == y {
				return true
			}
		}
	}
	return false
}

func without(list []string, drop ...string) []string {
	var out []string
	for _, x := range list {
		if !hasAny([]string{x}, drop) {
			out = append(out, x)
		}
	}
	return out
}
