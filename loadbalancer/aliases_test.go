package loadbalancer

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/names"
)

// TestAliasConflictsReportedOnce: a Service whose pvelb annotation and a
// MetalLB or Cilium alias disagree gets a Warning when the disagreement
// appears or changes, not on every sync.
func TestAliasConflictsReportedOnce(t *testing.T) {
	c := &Controller{aliasConflicts: map[allocator.ServiceKey]string{}}
	svc := func(ann map[string]string) *v1.Service {
		return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "d", Name: "web", Annotations: ann}}
	}
	for i, step := range []struct {
		ann  map[string]string
		want string // substring of the message; "" for none
	}{
		{map[string]string{names.MetalLBLoadBalancerIPs: "192.0.2.1"}, ""},
		{map[string]string{names.AnnotationIPs: "192.0.2.1", names.MetalLBLoadBalancerIPs: "192.0.2.2"}, `metallb.io/loadBalancerIPs "192.0.2.2" is ignored: pvelb.io/ips "192.0.2.1" is used`},
		{map[string]string{names.AnnotationIPs: "192.0.2.1", names.MetalLBLoadBalancerIPs: "192.0.2.2"}, ""},
		{map[string]string{names.AnnotationIPs: "192.0.2.1", names.MetalLBLoadBalancerIPs: "192.0.2.3"}, `"192.0.2.3" is ignored`},
		{map[string]string{names.AnnotationIPs: "192.0.2.1", names.MetalLBLoadBalancerIPs: "192.0.2.3", names.CiliumSharingKey: "a", names.MetalLBAllowSharedIP: "b"},
			`lbipam.cilium.io/sharing-key "a" is ignored: metallb.io/allow-shared-ip "b" is used`},
		{map[string]string{names.AnnotationIPs: "192.0.2.1"}, ""},
		{map[string]string{names.AnnotationIPs: "192.0.2.1", names.MetalLBLoadBalancerIPs: "192.0.2.3"}, `"192.0.2.3" is ignored`},
	} {
		got := c.aliasConflictsLocked(svc(step.ann))
		if (step.want == "") != (got == "") || !strings.Contains(got, step.want) {
			t.Errorf("step %d (%v): message %q, want one with %q", i, step.ann, got, step.want)
		}
	}
}
