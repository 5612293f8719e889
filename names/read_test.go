package names

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestServiceReaders(t *testing.T) {
	other := "example.com/lb"
	class := Class
	for _, tc := range []struct {
		name                 string
		svc                  v1.Service
		isClass              bool
		pool, key, allocated string
		hasAllocated         bool
	}{
		{name: "empty"},
		{name: "class", svc: v1.Service{Spec: v1.ServiceSpec{LoadBalancerClass: &class}}, isClass: true},
		{name: "other class", svc: v1.Service{Spec: v1.ServiceSpec{LoadBalancerClass: &other}}},
		{name: "annotations trimmed", svc: v1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			AnnotationPool: " blue ", AnnotationSharingKey: "k\t", AnnotationAllocatedPool: "",
		}}}, pool: "blue", key: "k", hasAllocated: true},
		{name: "allocated", svc: v1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			AnnotationAllocatedPool: "a,b",
		}}}, allocated: "a,b", hasAllocated: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsClass(&tc.svc); got != tc.isClass {
				t.Errorf("IsClass = %v, want %v", got, tc.isClass)
			}
			if got := RequestedPool(&tc.svc); got != tc.pool {
				t.Errorf("RequestedPool = %q, want %q", got, tc.pool)
			}
			if got := SharingKey(&tc.svc); got != tc.key {
				t.Errorf("SharingKey = %q, want %q", got, tc.key)
			}
			if got, ok := AllocatedPool(&tc.svc); got != tc.allocated || ok != tc.hasAllocated {
				t.Errorf("AllocatedPool = %q, %v, want %q, %v", got, ok, tc.allocated, tc.hasAllocated)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": "blue"},
		"spec":     map[string]any{"addresses": []any{"192.0.2.0/28"}},
	}}
	p, err := IPPool(u)
	if err != nil || p.Name != "blue" || len(p.Spec.Addresses) != 1 || p.Spec.Addresses[0] != "192.0.2.0/28" {
		t.Fatalf("IPPool = %+v, %v", p, err)
	}
	if p, err := IPPool(*u); err != nil || p.Name != "blue" {
		t.Fatalf("IPPool(value) = %+v, %v", p, err)
	}
	bad := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "broken"},
		"spec":     map[string]any{"addresses": "not a list"},
	}}
	if _, err := IPPool(bad); err == nil || !strings.Contains(err.Error(), "IPPool broken") {
		t.Errorf("IPPool(bad) error = %v, want one naming IPPool broken", err)
	}
	if _, err := BGPPeer(42); err == nil || !strings.Contains(err.Error(), "BGPPeer") {
		t.Errorf("BGPPeer(42) error = %v, want one naming the kind", err)
	}
}

func TestRegistryUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range Registry {
		if seen[e.Name] {
			t.Errorf("%s registered twice", e.Name)
		}
		seen[e.Name] = true
		if !strings.HasPrefix(e.Name, "pvelb.io/") || e.Kind == "" || e.On == "" || (e.SetBy != "user" && e.SetBy != "pvelb") {
			t.Errorf("incomplete entry %+v", e)
		}
	}
}
