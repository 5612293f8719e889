package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// TestFirstEnsureSucceeds: the service controller hands EnsureLoadBalancer
// the Service as read before it added its finalizer, so pvelb's first
// conditional write met a stale resourceVersion, failed, and the controller
// retried 5 s later: every new Service showed its EXTERNAL-IP 5 s late, with
// a SyncLoadBalancerFailed Warning. A conflict on that write must be
// resolved against the current Service at once.
func TestFirstEnsureSucceeds(t *testing.T) {
	l := lbLab(t, "")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/28"}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	// One copy of Services and Nodes: the controller manager's.
	if out := ccm.Output(); !strings.Contains(out, "Using the controller manager's shared informers") {
		t.Error("pvelb-ccm's LoadBalancer keeps its own Service and Node informers beside the controller manager's")
	}
	for _, name := range []string{"quick-1", "quick-2", "quick-3"} {
		start := time.Now()
		l.createService(t, "default", name)
		l.waitIPs(t, "default", name, 1)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s got its address after %s, want well under the service controller's 5 s retry", name, d.Round(time.Millisecond))
		}
		list, err := l.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.name": name, "reason": "SyncLoadBalancerFailed"}.AsSelector().String()})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Items {
			t.Errorf("%s: SyncLoadBalancerFailed: %s", name, e.Message)
		}
	}
}

// TestClassFinalizerOutlivesItsLeader: a pvelb-class Service switched to
// ClusterIP and back to a class-less LoadBalancer while no pvelb-ccm ran
// keeps pvelb's class finalizer; the next leader did not know the Service
// (ownership lived in the old replica's memory), so once deleted it stayed
// terminating forever (found by the churn suite, seed 42).
func TestClassFinalizerOutlivesItsLeader(t *testing.T) {
	l := lbLab(t, "")
	l.createPool(t, "main", map[string]any{"addresses": []any{"203.0.113.0/28"}})
	ccm, _ := l.startCCM(t)
	l.waitNodesInitialised(t)
	l.createService(t, "default", "flip", withClass(lbClass))
	l.waitIPs(t, "default", "flip", 1)
	ccm.Stop()

	ctx := context.Background()
	svcs := l.Client.CoreV1().Services("default")
	s, err := svcs.Get(ctx, "flip", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.LoadBalancerClass = nil
	s.Spec.ExternalTrafficPolicy = ""
	s.Spec.AllocateLoadBalancerNodePorts = nil
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].NodePort = 0
	}
	if s, err = svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeLoadBalancer
	if _, err = svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	l.startCCM(t)
	l.waitIPs(t, "default", "flip", 1)
	if err := svcs.Delete(ctx, "flip", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "the deleted Service is gone", func(ctx context.Context) error {
		s, err := svcs.Get(ctx, "flip", metav1.GetOptions{})
		if err == nil {
			return errorf("still there, finalizers %v", s.Finalizers)
		}
		return nil
	})
}
