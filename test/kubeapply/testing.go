package kubeapply

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/pvelb/pvelb/test/apiserver"
)

// StartT starts a kube-apiserver and etcd for one test and returns an
// Applier and a clientset for them; both stop when the test ends. Under
// -short the test is skipped, since starting them takes seconds.
func StartT(t testing.TB) (*Applier, kubernetes.Interface) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	cp := apiserver.StartT(t, apiserver.Options{})
	a, err := New(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	return a, cp.Client()
}

// Typed finds the kind object called name in objs and converts it to T
// (strictly: an unknown field fails), so a test can assert on typed fields
// of what it rendered or read. A missing object fails the test.
func Typed[T any](t testing.TB, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	u := Find(objs, kind, name)
	if u == nil {
		t.Fatalf("no %s %s among %v", kind, name, Kinds(objs))
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return out
}
