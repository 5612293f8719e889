package v1alpha1

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func runtimeScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDeepCopyIsDeep guards against shared slices/pointers between copies,
// which would let a controller mutate the informer cache.
func TestDeepCopyIsDeep(t *testing.T) {
	yes := true
	pref := uint32(100)
	p := &IPPool{Spec: IPPoolSpec{
		Addresses:  []string{"192.0.2.0/24"},
		AutoAssign: &yes,
		AllocateTo: &AllocateTo{Namespaces: []string{"a"}},
		Announce:   Announce{Mode: AnnounceBGP, Communities: []string{"65000:1"}, LocalPreference: &pref},
	}, Status: IPPoolStatus{IPv4: &FamilyUsage{Total: "256"}}}
	c := p.DeepCopy()
	c.Spec.Addresses[0] = "198.51.100.0/24"
	*c.Spec.AutoAssign = false
	c.Spec.AllocateTo.Namespaces[0] = "b"
	c.Spec.Announce.Communities[0] = "no-export"
	*c.Spec.Announce.LocalPreference = 1
	c.Status.IPv4.Total = "1"
	if p.Spec.Addresses[0] != "192.0.2.0/24" || !*p.Spec.AutoAssign || p.Spec.AllocateTo.Namespaces[0] != "a" ||
		p.Spec.Announce.Communities[0] != "65000:1" || *p.Spec.Announce.LocalPreference != 100 || p.Status.IPv4.Total != "256" {
		t.Fatalf("DeepCopy shares memory with the original: %+v", p)
	}
	if _, ok := interface{}(c).(runtime.Object); !ok {
		t.Fatal("IPPool is not a runtime.Object")
	}
}
