package announcer

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/eligibility"
)

func TestStopInPlace(t *testing.T) {
	now := metav1.Now()
	node := func(edit func(n *v1.Node)) *v1.Node {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
			Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}}}
		if edit != nil {
			edit(n)
		}
		return n
	}
	tests := []struct {
		name string
		node *v1.Node
		want bool
	}{
		{"a Ready node that stays (a DaemonSet rollout)", node(nil), true},
		{"no Ready condition yet", node(func(n *v1.Node) { n.Status.Conditions = nil }), true},
		{"not in the API", nil, false},
		{"being deleted", node(func(n *v1.Node) { n.DeletionTimestamp = &now }), false},
		{"tainted by the autoscaler", node(func(n *v1.Node) {
			n.Spec.Taints = []v1.Taint{{Key: eligibility.ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}
		}), false},
		{"cordoned for a drain", node(func(n *v1.Node) { n.Spec.Unschedulable = true }), false},
		{"excluded from load balancers", node(func(n *v1.Node) {
			n.Labels = map[string]string{v1.LabelNodeExcludeBalancers: "true"}
		}), false},
		{"shutting down (kubelet reports NotReady)", node(func(n *v1.Node) {
			n.Status.Conditions[0].Status = v1.ConditionFalse
		}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := stopInPlace(tt.node)
			if got != tt.want || why == "" {
				t.Errorf("stopInPlace = %v (%q), want %v with a reason", got, why, tt.want)
			}
		})
	}
}
