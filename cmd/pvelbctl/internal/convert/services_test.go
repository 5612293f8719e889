package convert

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestServiceNotes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := func(ns, name string, age int, class string, ips ...string) corev1.Service {
		s := corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		}
		if class != "" {
			s.Spec.LoadBalancerClass = &class
		}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		return s
	}
	clusterIP := svc("a", "internal", 0, "", "192.0.2.1")
	clusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	for _, tc := range []struct {
		name string
		svcs []corev1.Service
		want []string
	}{
		{"none", nil, nil},
		{"shared in one namespace", []corev1.Service{svc("a", "x", 0, "", "192.0.2.1"), svc("a", "y", 1, "", "192.0.2.1")}, nil},
		{"shared across namespaces: the older keeps it", []corev1.Service{svc("b", "new", 5, "", "192.0.2.1"), svc("a", "old", 1, "", "192.0.2.1"), svc("a", "mate", 2, "", "192.0.2.1")},
			[]string{"Service/a/old status.loadBalancer.ingress: 192.0.2.1 is shared with b/new in another namespace; pvelb's sharing keys are per namespace: this Service keeps 192.0.2.1, b/new gets a new address"}},
		{"shared with two others", []corev1.Service{svc("a", "old", 1, "", "192.0.2.1"), svc("b", "x", 2, "", "192.0.2.1"), svc("c", "y", 3, "", "192.0.2.1")},
			[]string{"Service/a/old status.loadBalancer.ingress: 192.0.2.1 is shared with b/x, c/y in another namespace; pvelb's sharing keys are per namespace: this Service keeps 192.0.2.1, b/x, c/y get a new address"}},
		{"same age: by name", []corev1.Service{svc("b", "s", 0, "", "2001:db8::1"), svc("a", "s", 0, "", "2001:db8::1")},
			[]string{"Service/a/s status.loadBalancer.ingress: 2001:db8::1 is shared with b/s in another namespace; pvelb's sharing keys are per namespace: this Service keeps 2001:db8::1, b/s gets a new address"}},
		{"another class", []corev1.Service{svc("a", "l2", 0, "io.cilium/l2-announcer", "192.0.2.1"), svc("b", "mine", 0, "pvelb.io/loadbalancer", "192.0.2.1")},
			[]string{"Service/a/l2 spec.loadBalancerClass: pvelb serves no Service of class io.cilium/l2-announcer, and the class cannot change: recreate the Service without one (or with pvelb.io/loadbalancer) to have pvelb serve it; its address is not kept"}},
		{"not a LoadBalancer", []corev1.Service{clusterIP, svc("b", "lb", 0, "", "192.0.2.1")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, n := range ServiceNotes(tc.svcs) {
				got = append(got, n.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
