package names

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// IsClass reports whether the Service asks for pvelb's class.
func IsClass(svc *v1.Service) bool {
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == Class
}

// AllocatedPool returns the Service's AnnotationAllocatedPool; ok says
// whether it is present, which marks addresses pvelb gave.
func AllocatedPool(svc *v1.Service) (value string, ok bool) {
	value, ok = svc.Annotations[AnnotationAllocatedPool]
	return value, ok
}

// RequestedPool returns the IPPool named by AnnotationPool (or an alias of
// it, see Lookup), "" for none.
func RequestedPool(svc *v1.Service) string {
	v, _, _ := Lookup(svc.Annotations, AnnotationPool)
	return strings.TrimSpace(v)
}

// SharingKey returns the Service's AnnotationSharingKey (or an alias of it,
// see Lookup), "" for none.
func SharingKey(svc *v1.Service) string {
	v, _, _ := Lookup(svc.Annotations, AnnotationSharingKey)
	return strings.TrimSpace(v)
}

// IPPool converts an object of the IPPools dynamic informer or list; the
// error names the object.
func IPPool(obj any) (*v1alpha1.IPPool, error) {
	var p v1alpha1.IPPool
	if err := decode(obj, "IPPool", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// BGPPeer converts an object of the BGPPeers dynamic informer or list; the
// error names the object.
func BGPPeer(obj any) (*v1alpha1.BGPPeer, error) {
	var p v1alpha1.BGPPeer
	if err := decode(obj, "BGPPeer", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func decode(obj any, kind string, into any) error {
	var u *unstructured.Unstructured
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		u = o
	case unstructured.Unstructured:
		u = &o
	default:
		return fmt.Errorf("%s: unexpected %T", kind, obj)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), into); err != nil {
		return fmt.Errorf("%s %s: %w", kind, u.GetName(), err)
	}
	return nil
}
