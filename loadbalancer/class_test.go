package loadbalancer

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/pvelb/pvelb/names"
)

// classHarness drives the class controller's sync by hand: the lister is
// an indexer the test fills with the Service as the apiserver holds it
// (read back from the fake clientset after every sync), so each step sees
// exactly the writes of the previous one. The real-apiserver e2e tests
// (TestLoadBalancerClassOnly, TestClassFinalizerOutlivesItsLeader) cover
// the informers and the queue.
type classHarness struct {
	t     *testing.T
	c     *Controller
	cc    *classController
	index cache.Indexer
}

func newClassHarness(t *testing.T, svc *v1.Service) *classHarness {
	t.Helper()
	c := ownershipController(t, svc)
	index := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	cc := &classController{
		lb:     c,
		lister: listersv1.NewServiceLister(index),
		queue: workqueue.NewTypedRateLimitingQueue[string](
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, time.Second)),
		owned: map[string]bool{}, gone: map[string]*v1.Service{}, failed: map[string]bool{},
	}
	t.Cleanup(cc.queue.ShutDown)
	h := &classHarness{t: t, c: c, cc: cc, index: index}
	h.reload(svc.Name)
	return h
}

// reload copies the Service from the fake apiserver into the lister.
func (h *classHarness) reload(name string) *v1.Service {
	h.t.Helper()
	svc, err := h.c.kube.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.index.Update(svc); err != nil {
		h.t.Fatal(err)
	}
	return svc
}

// edit changes the Service on the fake apiserver, as a user would.
func (h *classHarness) edit(name string, change func(*v1.Service)) {
	h.t.Helper()
	svc := h.reload(name)
	change(svc)
	if _, err := h.c.kube.CoreV1().Services("default").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.reload(name)
}

// sync runs one sync of the Service and returns it as written.
func (h *classHarness) sync(name string) *v1.Service {
	h.t.Helper()
	if err := h.cc.sync(context.Background(), "default/"+name); err != nil {
		h.t.Fatalf("sync: %v", err)
	}
	return h.reload(name)
}

func (h *classHarness) holds(name string) (assigned, leaving []netip.Addr) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	k := keyOf(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}})
	return h.c.alloc.Assigned(k), h.c.alloc.Leaving(k)
}

var firstVIP = []netip.Addr{netip.MustParseAddr("192.0.2.0")}

func TestClassControllerEnsureAndTypeChange(t *testing.T) {
	class := names.Class
	h := newClassHarness(t, lbService("web", &class))

	got := h.sync("web")
	if !slices.Equal(got.Finalizers, []string{names.FinalizerClass}) {
		t.Errorf("finalizers %v, want only %s", got.Finalizers, names.FinalizerClass)
	}
	if !sameAddrs(ingressIPs(got), firstVIP) {
		t.Fatalf("status %v, want %v", got.Status.LoadBalancer.Ingress, firstVIP)
	}
	if m := got.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != v1.LoadBalancerIPModeVIP {
		t.Errorf("ipMode %v, want VIP", m)
	}

	// Type changed away from LoadBalancer: the apiserver clears the class,
	// and only the controller's memory (owned) says the Service was ours.
	h.edit("web", func(s *v1.Service) {
		s.Spec.Type, s.Spec.LoadBalancerClass = v1.ServiceTypeClusterIP, nil
	})
	got = h.sync("web")
	if len(got.Status.LoadBalancer.Ingress) != 0 || len(got.Finalizers) != 0 {
		t.Errorf("after the type change: status %v, finalizers %v; want both cleared", got.Status.LoadBalancer.Ingress, got.Finalizers)
	}
	if assigned, leaving := h.holds("web"); len(assigned) != 0 || len(leaving) != 0 {
		t.Errorf("after the type change the allocator holds %v (leaving %v), want nothing", assigned, leaving)
	}
}

// TestClassControllerCleansUpWhatAnotherReplicaLeft: a Service switched
// away from the class while no leader ran carries the class finalizer and
// pvelb's annotation, and this replica never owned it: it is cleaned up
// all the same, or it would keep its finalizer (and, once deleted, never go).
func TestClassControllerCleansUpWhatAnotherReplicaLeft(t *testing.T) {
	svc := lbService("left", nil)
	svc.Spec.Type = v1.ServiceTypeClusterIP
	svc.Finalizers = []string{names.FinalizerClass}
	svc.Annotations = map[string]string{names.AnnotationAllocatedPool: "main"}
	h := newClassHarness(t, svc)

	got := h.sync("left")
	if len(got.Finalizers) != 0 {
		t.Errorf("finalizers %v, want the class finalizer removed", got.Finalizers)
	}
}

// TestClassControllerLeavesOtherClassesAlone: a Service of another class,
// or class-less and never ours, is not written at all.
func TestClassControllerLeavesOtherClassesAlone(t *testing.T) {
	other := "example.com/lb"
	for _, svc := range []*v1.Service{lbService("other", &other), lbService("classless", nil)} {
		t.Run(svc.Name, func(t *testing.T) {
			h := newClassHarness(t, svc)
			before := h.reload(svc.Name)
			got := h.sync(svc.Name)
			if got.ResourceVersion != before.ResourceVersion || len(got.Finalizers) != 0 || len(got.Status.LoadBalancer.Ingress) != 0 {
				t.Errorf("the class controller wrote %s: %+v", svc.Name, got)
			}
			if assigned, _ := h.holds(svc.Name); len(assigned) != 0 {
				t.Errorf("allocated %v for %s", assigned, svc.Name)
			}
		})
	}
}

// TestClassControllerReleasesADeletedService: a Service deleted while the
// controller held it is released from the last state it saw.
func TestClassControllerReleasesADeletedService(t *testing.T) {
	class := names.Class
	h := newClassHarness(t, lbService("gone", &class))
	last := h.sync("gone")
	if err := h.c.kube.CoreV1().Services("default").Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.index.Delete(last); err != nil {
		t.Fatal(err)
	}
	h.cc.gone["default/gone"] = last
	if err := h.cc.sync(context.Background(), "default/gone"); err != nil {
		t.Fatal(err)
	}
	if assigned, leaving := h.holds("gone"); len(assigned) != 0 || len(leaving) != 0 {
		t.Errorf("a deleted Service still holds %v (leaving %v)", assigned, leaving)
	}
	if h.cc.owned["default/gone"] || h.cc.gone["default/gone"] != nil {
		t.Error("the deleted Service is still remembered")
	}
}

// TestClassControllerReleasesWhatTheServiceControllerLeft: a class-less
// Service the service controller gave an address, flipped to ClusterIP and
// to a pvelb-class LoadBalancer and back faster than the service controller
// synced it. The service controller saw it with a class, so it dropped its
// finalizer without EnsureLoadBalancerDeleted, and will never release the
// address; the class controller, left with it, must (the churn soak, seed
// 42: an address held for a Service that showed it nowhere, in the IPSets
// for good). While the service controller's finalizer is on, the address
// stays its to release.
func TestClassControllerReleasesWhatTheServiceControllerLeft(t *testing.T) {
	svc := lbService("flip", nil)
	svc.Finalizers = []string{names.FinalizerService}
	h := newClassHarness(t, svc)
	if _, err := h.c.EnsureLoadBalancer(context.Background(), "", h.reload("flip"), nil); err != nil {
		t.Fatal(err)
	}
	if assigned, _ := h.holds("flip"); len(assigned) != 1 {
		t.Fatalf("the service controller's ensure holds %v", assigned)
	}
	// The class controller had begun to take the Service (its finalizer),
	// and the Service is ClusterIP again, the service controller's
	// finalizer still on: not the class controller's to release.
	h.edit("flip", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeClusterIP
		s.Finalizers = []string{names.FinalizerService, names.FinalizerClass}
	})
	h.sync("flip")
	if assigned, _ := h.holds("flip"); len(assigned) != 1 {
		t.Fatalf("released while the service controller's finalizer is on: holds %v", assigned)
	}
	// The service controller dropped its finalizer without releasing.
	h.edit("flip", func(s *v1.Service) { s.Finalizers = []string{names.FinalizerClass} })
	got := h.sync("flip")
	if assigned, leaving := h.holds("flip"); len(assigned) != 0 || len(leaving) != 0 {
		t.Errorf("the address the service controller left is still held: %v (leaving %v)", assigned, leaving)
	}
	if len(got.Finalizers) != 0 {
		t.Errorf("finalizers %v, want none", got.Finalizers)
	}
}

// TestClassControllerTakesUpWhatTheServiceControllerLeft: as above, but the
// class controller never had the Service (no class finalizer, never owned):
// the address the service controller left on a ClusterIP Service is
// released all the same (the soak, seed 42, operation 1300, after the
// first fix).
func TestClassControllerTakesUpWhatTheServiceControllerLeft(t *testing.T) {
	svc := lbService("left", nil)
	svc.Finalizers = []string{names.FinalizerService}
	h := newClassHarness(t, svc)
	if _, err := h.c.EnsureLoadBalancer(context.Background(), "", h.reload("left"), nil); err != nil {
		t.Fatal(err)
	}
	h.edit("left", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeClusterIP
		s.Finalizers = nil
	})
	if !h.c.leftToClass(h.reload("left")) {
		t.Fatal("a ClusterIP Service whose address the service controller left is not the class controller's to clean up")
	}
	h.sync("left")
	// Withdrawn; it stays reserved (leaving) only until the leaving loop
	// sees no status shows it.
	if assigned, _ := h.holds("left"); len(assigned) != 0 {
		t.Errorf("the address the service controller left is still assigned: %v", assigned)
	}
}
