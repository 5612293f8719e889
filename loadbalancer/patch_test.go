package loadbalancer

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/names"
)

func TestConditionalPatch(t *testing.T) {
	base := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s", ResourceVersion: "42",
		Finalizers: []string{"example.com/hold"}}}
	tests := []struct {
		name   string
		change func(*v1.Service)
		want   string
	}{
		{"status", func(s *v1.Service) {
			s.Status.LoadBalancer = *statusFor([]netip.Addr{netip.MustParseAddr("192.0.2.1")})
		},
			`{"metadata":{"resourceVersion":"42"},"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1","ipMode":"VIP"}]}}}`},
		{"finalizer added", func(s *v1.Service) { s.Finalizers = append(s.Finalizers, names.FinalizerClass) },
			`{"metadata":{"$setElementOrder/finalizers":["example.com/hold","pvelb.io/load-balancer-cleanup"],"finalizers":["pvelb.io/load-balancer-cleanup"],"resourceVersion":"42"}}`},
		{"nothing: still conditional", func(*v1.Service) {}, `{"metadata":{"resourceVersion":"42"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			updated := base.DeepCopy()
			tt.change(updated)
			got, err := conditionalPatch(base, updated)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal([]byte(tt.want), &w)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("patch %s, want %s", got, tt.want)
			}
		})
	}
}
