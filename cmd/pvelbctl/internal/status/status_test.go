package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

func svc(name string, class *string, pool string, ips ...string) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class},
	}
	if pool != "" {
		s.Annotations["pvelb.io/allocated-pool"] = pool
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func event(svcName, msg string, at time.Time) corev1.Event {
	return corev1.Event{
		InvolvedObject: corev1.ObjectReference{Kind: "Service", Namespace: "default", Name: svcName},
		Reason:         "Announcing", Message: msg, LastTimestamp: metav1.NewTime(at),
	}
}

func TestBuild(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	other, ours := "example.com/lb", names.Class
	in := Input{
		Now: now,
		Services: []corev1.Service{
			svc("web", nil, "main", "192.0.2.200", "2001:db8::200"),
			svc("classed", &ours, "main"),               // pending
			svc("metallb", &other, "", "198.51.100.1"),  // another implementation's
			svc("unallocated", nil, "", "198.51.100.2"), // default class, not pvelb's
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "clusterip", Annotations: map[string]string{"pvelb.io/allocated-pool": "main"}}},
		},
		Events: []corev1.Event{
			event("web", "Node n1 answers for 192.0.2.200 (ARP/NDP on eth0)", now.Add(-time.Minute)),
			event("web", "Node n3 answers for 192.0.2.200 (ARP/NDP on eth0)", now.Add(-10*time.Second)),
			event("web", "Node n2 answers for 2001:db8::200 (ARP/NDP on eth0)", now.Add(-time.Hour)),
			event("web", "not an announcement", now),
		},
		Pools: []v1alpha1.IPPool{{
			ObjectMeta: metav1.ObjectMeta{Name: "main"},
			Spec:       v1alpha1.IPPoolSpec{Addresses: []string{"192.0.2.200-192.0.2.209"}},
			Status: v1alpha1.IPPoolStatus{
				IPv4:       &v1alpha1.FamilyUsage{Total: "10", Used: 1, Free: "9"},
				Conditions: []metav1.Condition{{Type: "Overlapping", Status: metav1.ConditionTrue, Message: "overlaps pool other"}},
			},
		}},
	}
	r := Build(in)
	want := []ServiceRow{
		{Namespace: "default", Name: "classed", Class: ours, VIP: "<pending>", Pool: "main"},
		{Namespace: "default", Name: "web", Class: "(default)", VIP: "192.0.2.200", Pool: "main", Node: "n3", Since: 10 * time.Second},
		{Namespace: "default", Name: "web", Class: "(default)", VIP: "2001:db8::200", Pool: "main", Node: "n2", Since: time.Hour},
	}
	if len(r.Services) != len(want) {
		t.Fatalf("services %+v, want %+v", r.Services, want)
	}
	for i := range want {
		if r.Services[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, r.Services[i], want[i])
		}
	}
	if len(r.Pools) != 1 || r.Pools[0].Used != 1 || r.Pools[0].Free != "9" || r.Pools[0].Mode != "arp" || len(r.Pools[0].Problems) != 1 {
		t.Fatalf("pools %+v", r.Pools)
	}
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"192.0.2.200", "n3", "<pending>", "Overlapping=True: overlaps pool other"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("rendered report lacks %q:\n%s", s, b.String())
		}
	}
	if strings.Contains(b.String(), "metallb") || strings.Contains(b.String(), "unallocated") {
		t.Errorf("report lists Services pvelb does not serve:\n%s", b.String())
	}
}
