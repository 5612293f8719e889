package e2e

import (
	"context"
	"testing"
	"time"

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
	l.startCCM(t)
	l.waitNodesInitialised(t)
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
