package loadbalancer

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pvelb/pvelb/names"
)

// TestEnsureRefusesAStaleCopy: the service controller ensures the copy it
// read when its sync began; when the user edits the Service meanwhile (here
// takes its sharing key away), returning the status computed from the old
// copy would show an address the Service may not hold as it is now, until
// that controller's next sync of it, which after a leader change can be
// seconds away (the churn suite saw 1.2 s). Ensure fails instead, so that
// nothing is written and the Service is synced again at once; an unchanged
// Service, or one changed only by pvelb's own writes, is answered.
func TestEnsureRefusesAStaleCopy(t *testing.T) {
	tests := []struct {
		name  string
		live  func(*v1.Service) // the edit that reached the informer meanwhile; nil: none
		stale bool
	}{
		{"unchanged", nil, false},
		{"only pvelb's allocated-pool annotation", func(s *v1.Service) { s.Annotations[names.AnnotationAllocatedPool] = "main" }, false},
		{"harmless annotation", func(s *v1.Service) { s.Annotations["example.com/note"] = "x" }, false},
		{"sharing key removed", func(s *v1.Service) { delete(s.Annotations, names.AnnotationSharingKey) }, true},
		{"sharing key changed", func(s *v1.Service) { s.Annotations[names.AnnotationSharingKey] = "other" }, true},
		{"ports changed", func(s *v1.Service) { s.Spec.Ports[0].Port = 80 }, true},
		{"pool requested", func(s *v1.Service) { s.Annotations[names.AnnotationPool] = "main" }, true},
		{"address requested", func(s *v1.Service) { s.Spec.LoadBalancerIP = "192.0.2.3" }, true},
		{"type changed", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }, true},
		{"class changed", func(s *v1.Service) { c := names.Class; s.Spec.LoadBalancerClass = &c }, true},
		{"deleted", func(s *v1.Service) { s.Name = "" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := keyed("share-a", 80), keyed("share-b", 81)
			c, index := sharingPair(t, a, b)
			ctx := context.Background()
			live := b.DeepCopy()
			if tt.live != nil {
				tt.live(live)
			}
			if live.Name != "" {
				if err := index.Add(live); err != nil {
					t.Fatal(err)
				}
			}
			st, err := c.EnsureLoadBalancer(ctx, "", b.DeepCopy(), nil)
			if tt.stale {
				if err == nil || st != nil {
					t.Fatalf("ensure of a stale copy = %v, %v; want an error and no status", st, err)
				}
				return
			}
			if err != nil || st == nil || len(st.Ingress) != 1 || st.Ingress[0].IP != "192.0.2.0" {
				t.Fatalf("ensure = %v, %v; want the shared 192.0.2.0", st, err)
			}
		})
	}
}

// TestJoinsAHolderAsItIsNow: share-a got 192.0.2.0 under key k and was then
// edited to drop the key; before its own next ensure, share-b (key k) is
// ensured. Joining share-a's address on the strength of its old record would
// show one address on two Services that may not share it (the churn suite
// saw 0.7 s of it), so share-b gets an address of its own.
func TestJoinsAHolderAsItIsNow(t *testing.T) {
	a, b := keyed("share-a", 80), keyed("share-b", 81)
	c, index := sharingPair(t, a, b)
	ctx := context.Background()
	edited := a.DeepCopy()
	delete(edited.Annotations, names.AnnotationSharingKey)
	if err := index.Update(edited); err != nil {
		t.Fatal(err)
	}
	if err := index.Add(b); err != nil {
		t.Fatal(err)
	}
	st, err := c.EnsureLoadBalancer(ctx, "", b.DeepCopy(), nil)
	if err != nil || len(st.Ingress) != 1 {
		t.Fatalf("ensure share-b = %v, %v", st, err)
	}
	if st.Ingress[0].IP == "192.0.2.0" {
		t.Fatalf("share-b joined 192.0.2.0, held by share-a, which no longer sets the sharing key")
	}
}

// sharingPair is a Controller whose Service informer is an indexer the test
// fills, with a ensured and in the informer (b is on the fake apiserver only).
func sharingPair(t *testing.T, a, b *v1.Service) (*Controller, cache.Indexer) {
	t.Helper()
	c := ownershipController(t, a, b)
	index := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	c.services = listersv1.NewServiceLister(index)
	if err := index.Add(a); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsureLoadBalancer(context.Background(), "", a.DeepCopy(), nil); err != nil {
		t.Fatal(err)
	}
	return c, index
}

// TestEnsureRefusesAnEditMetWhileRecordingThePool: the user's edit lands
// between the allocation and pvelb's write of its pool annotation. The write
// meets a Conflict and is made again onto the Service as it is now, which
// must not pass the edit off as the Service the addresses were chosen for:
// the churn suite saw a status computed before a sharing key was removed
// written 1 s after the removal.
func TestEnsureRefusesAnEditMetWhileRecordingThePool(t *testing.T) {
	a, b := keyed("share-a", 80), keyed("share-b", 81)
	c, index := sharingPair(t, a, b)
	if err := index.Add(b); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The edit, on the apiserver and by the end of the ensure in the
	// informer.
	edited := b.DeepCopy()
	delete(edited.Annotations, names.AnnotationSharingKey)
	if _, err := c.kube.CoreV1().Services("default").Update(ctx, edited, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := index.Update(edited); err != nil {
		t.Fatal(err)
	}
	stale := b.DeepCopy()
	stale.ResourceVersion = "1"
	st, err := c.EnsureLoadBalancer(ctx, "", stale, nil)
	if err == nil || st != nil {
		t.Fatalf("ensure = %v, %v; want an error and no status", st, err)
	}
}

// TestEditedSharerMovesNotItsPartner: share-a and share-b share 192.0.2.0;
// share-b's sharing key is edited. Whichever is ensured first, it is
// share-b, the edited one, that moves: an unrelated edit never moves an
// address, and share-a's request did not change.
func TestEditedSharerMovesNotItsPartner(t *testing.T) {
	a, b := keyed("share-a", 80), keyed("share-b", 81)
	c, index := sharingPair(t, a, b)
	if err := index.Add(b); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if st, err := c.EnsureLoadBalancer(ctx, "", b.DeepCopy(), nil); err != nil || st.Ingress[0].IP != "192.0.2.0" {
		t.Fatalf("share-b = %v, %v; want it to share 192.0.2.0", st, err)
	}
	edited := b.DeepCopy()
	edited.Annotations[names.AnnotationSharingKey] = "other"
	if err := index.Update(edited); err != nil {
		t.Fatal(err)
	}
	// share-a first (a resync, or a retry of its own).
	if st, err := c.EnsureLoadBalancer(ctx, "", a.DeepCopy(), nil); err != nil || st.Ingress[0].IP != "192.0.2.0" {
		t.Fatalf("share-a = %v, %v; want 192.0.2.0 kept", st, err)
	}
	st, err := c.EnsureLoadBalancer(ctx, "", edited.DeepCopy(), nil)
	if err != nil || st.Ingress[0].IP == "192.0.2.0" {
		t.Fatalf("share-b = %v, %v; want it moved off 192.0.2.0", st, err)
	}
}

// keyed is a class-less LoadBalancer Service with sharing key "k" on port.
func keyed(name string, port int32) *v1.Service {
	s := lbService(name, nil)
	s.Annotations = map[string]string{names.AnnotationSharingKey: "k"}
	s.Spec.Ports[0].Port = port
	return s
}
