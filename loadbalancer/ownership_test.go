package loadbalancer

import (
	"context"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
)

// ownershipController is a started-enough Controller: one pool, no
// firewall, writes absorbed by a fake clientset (only what the Controller
// decides is checked here; the e2e suite checks the writes on a real
// apiserver).
func ownershipController(t *testing.T, objs ...*v1.Service) *Controller {
	t.Helper()
	c, err := New(Options{Clients: map[string]pve.Client{"lab": &listingClient{}},
		LoadBalancer: config.LoadBalancer{ServeClasslessServices: true}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var rt []runtime.Object
	for _, o := range objs {
		rt = append(rt, o)
	}
	c.kube = fake.NewClientset(rt...)
	rs, err := allocator.ParseRanges([]string{"192.0.2.0/30"})
	if err != nil {
		t.Fatal(err)
	}
	c.alloc.SetPools([]allocator.Pool{{Name: "main", Ranges: rs, AutoAssign: true, Usable: true}})
	close(c.ready)
	return c
}

func lbService(name string, class *string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: "1"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, LoadBalancerClass: class,
			Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
	}
}

// TestEachControllerReleasesOnlyItsOwn: the service controller's delete path
// (GetLoadBalancer, then EnsureLoadBalancerDeleted), which it also takes for
// a Service it queued while that Service was class-less or ClusterIP, never
// reports or releases what the class controller holds; the class controller
// leaves the service controller's allocations alone in turn.
func TestEachControllerReleasesOnlyItsOwn(t *testing.T) {
	class := names.Class
	classless := func(s *v1.Service) *v1.Service { s.Spec.LoadBalancerClass = nil; return s }
	clusterIP := func(s *v1.Service) *v1.Service {
		s.Spec.Type, s.Spec.LoadBalancerClass = v1.ServiceTypeClusterIP, nil
		return s
	}
	scFinalizer := func(s *v1.Service) *v1.Service { s.Finalizers = []string{names.FinalizerService}; return s }
	tests := []struct {
		name     string
		via      string      // who ensured it
		seen     *v1.Service // the Service as the caller sees it when releasing
		caller   string
		reported bool // GetLoadBalancer's exists (service controller only)
		released bool
	}{
		{"class Service, service controller's late delete", viaClass, lbService("s", &class), viaServiceController, false, false},
		{"class Service seen as ClusterIP, service controller", viaClass, clusterIP(lbService("s", &class)), viaServiceController, false, false},
		{"class Service seen class-less, service controller", viaClass, classless(lbService("s", &class)), viaServiceController, false, false},
		{"class-less Service, service controller", viaServiceController, lbService("s", nil), viaServiceController, true, true},
		{"class-less Service now ClusterIP, service controller", viaServiceController, clusterIP(lbService("s", nil)), viaServiceController, true, true},
		// The service controller adds its finalizer before it ensures, and
		// releases before it removes it.
		{"class-less Service, class controller", viaServiceController, scFinalizer(clusterIP(lbService("s", nil))), viaClass, false, false},
		// ... unless it last saw the Service with a class: then it drops
		// its finalizer without releasing, and the class controller must.
		{"class-less Service the service controller left, class controller", viaServiceController, clusterIP(lbService("s", nil)), viaClass, false, true},
		{"class Service, class controller", viaClass, clusterIP(lbService("s", &class)), viaClass, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := lbService("s", nil)
			if tt.via == viaClass {
				svc = lbService("s", &class)
			}
			c := ownershipController(t, svc)
			ctx := context.Background()
			if _, err := c.ensure(ctx, svc.DeepCopy(), tt.via); err != nil {
				t.Fatal(err)
			}
			want := []netip.Addr{netip.MustParseAddr("192.0.2.0")}
			key := keyOf(svc)
			if tt.caller == viaServiceController {
				_, exists, err := c.GetLoadBalancer(ctx, "", tt.seen)
				if err != nil || exists != tt.reported {
					t.Fatalf("GetLoadBalancer exists = %v (%v), want %v", exists, err, tt.reported)
				}
				if err := c.EnsureLoadBalancerDeleted(ctx, "", tt.seen); err != nil {
					t.Fatal(err)
				}
			} else if _, err := c.release(ctx, tt.seen, viaClass, false); err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			assigned, leaving := c.alloc.Assigned(key), c.alloc.Leaving(key)
			c.mu.Unlock()
			if tt.released {
				// Released, but reserved while the status may show it.
				if len(assigned) != 0 || !sameAddrs(leaving, want) {
					t.Fatalf("assigned %v leaving %v, want %v leaving", assigned, leaving, want)
				}
				return
			}
			if !sameAddrs(assigned, want) {
				t.Fatalf("assigned %v, want %v kept", assigned, want)
			}
		})
	}
}
