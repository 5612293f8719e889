package status

import (
	"bytes"
	"reflect"
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

func announcement(svcName, node, host, vmid string, mode v1alpha1.AnnouncementMode, since time.Time, ips ...string) v1alpha1.ServiceAnnouncement {
	return v1alpha1.ServiceAnnouncement{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: svcName + "." + node, CreationTimestamp: metav1.NewTime(since)},
		Status:     v1alpha1.ServiceAnnouncementStatus{Service: svcName, Node: node, Mode: mode, IPs: ips, ProxmoxHost: host, VMID: vmid},
	}
}

func TestBuild(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	other, ours := "example.com/lb", names.Class
	in := Input{
		Now: now,
		Services: []corev1.Service{
			svc("web", nil, "main", "192.0.2.200", "2001:db8::200"),
			svc("routed", &ours, "bgp", "203.0.113.1"),
			svc("lonely", nil, "main", "192.0.2.201"),   // nobody announces it
			svc("classed", &ours, "main"),               // pending
			svc("metallb", &other, "", "198.51.100.1"),  // another implementation's
			svc("unallocated", nil, "", "198.51.100.2"), // default class, not pvelb's
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "clusterip", Annotations: map[string]string{"pvelb.io/allocated-pool": "main"}}},
		},
		Announcements: []v1alpha1.ServiceAnnouncement{
			announcement("web", "n3", "pve3", "103", v1alpha1.AnnouncementL2, now.Add(-10*time.Second), "192.0.2.200"),
			announcement("web", "n2", "pve2", "", v1alpha1.AnnouncementL2, now.Add(-time.Hour), "2001:db8::200"),
			announcement("routed", "n2", "pve2", "102", v1alpha1.AnnouncementBGP, now.Add(-time.Minute), "203.0.113.1"),
			announcement("routed", "n1", "pve1", "101", v1alpha1.AnnouncementBGP, now.Add(-time.Hour), "203.0.113.1"),
			// Another namespace's Service of the same name is another Service.
			{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web.n1"}, Status: v1alpha1.ServiceAnnouncementStatus{Service: "web", Node: "n1", IPs: []string{"192.0.2.200"}}},
		},
		Peers: []v1alpha1.BGPPeer{
			{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "198.51.100.1"},
				Status: v1alpha1.BGPPeerStatus{Sessions: []v1alpha1.BGPSession{
					{Node: "n2", State: "active"},
					{Node: "n1", State: "established", Since: &metav1.Time{Time: now.Add(-time.Minute)}},
				}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "idle"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "198.51.100.2"}},
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
		{Namespace: "default", Name: "lonely", Class: "(default)", VIP: "192.0.2.201", Pool: "main"},
		{Namespace: "default", Name: "routed", Class: ours, VIP: "203.0.113.1", Pool: "bgp", Mode: "BGP",
			Nodes: []string{"n1", "n2"}, Hosts: []string{"pve1/101", "pve2/102"}, Since: time.Hour},
		{Namespace: "default", Name: "web", Class: "(default)", VIP: "192.0.2.200", Pool: "main", Mode: "L2",
			Nodes: []string{"n3"}, Hosts: []string{"pve3/103"}, Since: 10 * time.Second},
		{Namespace: "default", Name: "web", Class: "(default)", VIP: "2001:db8::200", Pool: "main", Mode: "L2",
			Nodes: []string{"n2"}, Hosts: []string{"pve2/-"}, Since: time.Hour},
	}
	if !reflect.DeepEqual(r.Services, want) {
		t.Errorf("services:\n got  %+v\n want %+v", r.Services, want)
	}
	wantSessions := []SessionRow{
		{Peer: "idle", Address: "198.51.100.2"},
		{Peer: "tor", Address: "198.51.100.1", Node: "n1", State: "established", Since: time.Minute},
		{Peer: "tor", Address: "198.51.100.1", Node: "n2", State: "active"},
	}
	if !reflect.DeepEqual(r.Sessions, wantSessions) {
		t.Errorf("sessions:\n got  %+v\n want %+v", r.Sessions, wantSessions)
	}
	if len(r.Pools) != 1 || r.Pools[0].Used != 1 || r.Pools[0].Free != "9" || r.Pools[0].Mode != "arp" || len(r.Pools[0].Problems) != 1 {
		t.Fatalf("pools %+v", r.Pools)
	}
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"192.0.2.200", "n3", "pve3/103", "n1,n2", "pve1/101,pve2/102", "<pending>", "(nobody", "Overlapping=True: overlaps pool other",
		"BGP PEER", "established", "1m0s", "(no node reports a session)"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("rendered report lacks %q:\n%s", s, b.String())
		}
	}
	if strings.Contains(b.String(), "metallb") || strings.Contains(b.String(), "unallocated") {
		t.Errorf("report lists Services pvelb does not serve:\n%s", b.String())
	}
}
