package announcer

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
)

func TestDesiredAnnouncements(t *testing.T) {
	ip := netip.MustParseAddr
	self := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{
		names.LabelProxmoxHost: "pve2", names.LabelProxmoxVMID: "102",
	}}}
	plan := []Assignment{
		{IP: ip("192.0.2.10"), Services: []string{"default/web"}},
		{IP: ip("2001:db8::10"), Services: []string{"default/web"}},
		{IP: ip("192.0.2.11"), Services: []string{"default/dns-tcp", "default/dns-udp"}},
		{IP: ip("203.0.113.5"), Services: []string{"prod/api"}},
		{IP: ip("192.0.2.12"), Services: []string{"default/elsewhere"}},
	}
	st := func(svc string, mode v1alpha1.AnnouncementMode, ifs string, ips ...string) v1alpha1.ServiceAnnouncementStatus {
		return v1alpha1.ServiceAnnouncementStatus{Service: svc, Node: "n1", Mode: mode, IPs: ips, Interfaces: ifs, ProxmoxHost: "pve2", VMID: "102"}
	}
	cases := []struct {
		name string
		l2   map[netip.Addr]string
		bgp  map[netip.Addr]bool
		want map[svcKey]v1alpha1.ServiceAnnouncementStatus
	}{
		{name: "nothing announced", want: map[svcKey]v1alpha1.ServiceAnnouncementStatus{}},
		{
			name: "L2 dual-stack and a shared address",
			l2:   map[netip.Addr]string{ip("2001:db8::10"): "ens18", ip("192.0.2.10"): "ens18", ip("192.0.2.11"): "ens18,vlan20"},
			want: map[svcKey]v1alpha1.ServiceAnnouncementStatus{
				{"default", "web"}:     st("web", v1alpha1.AnnouncementL2, "ens18", "192.0.2.10", "2001:db8::10"),
				{"default", "dns-tcp"}: st("dns-tcp", v1alpha1.AnnouncementL2, "ens18,vlan20", "192.0.2.11"),
				{"default", "dns-udp"}: st("dns-udp", v1alpha1.AnnouncementL2, "ens18,vlan20", "192.0.2.11"),
			},
		},
		{
			name: "BGP, and L2 plus BGP for one Service",
			l2:   map[netip.Addr]string{ip("192.0.2.10"): "ens18"},
			bgp:  map[netip.Addr]bool{ip("2001:db8::10"): true, ip("203.0.113.5"): true},
			want: map[svcKey]v1alpha1.ServiceAnnouncementStatus{
				{"default", "web"}: st("web", v1alpha1.AnnouncementL2BGP, "ens18", "192.0.2.10", "2001:db8::10"),
				{"prod", "api"}:    st("api", v1alpha1.AnnouncementBGP, "", "203.0.113.5"),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := desiredAnnouncements("n1", self, plan, tc.l2, tc.bgp)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// Without its Node (not in the cache yet) the host and VM are empty.
	got := desiredAnnouncements("n1", nil, plan[:1], map[netip.Addr]string{ip("192.0.2.10"): "ens18"}, nil)
	if s := got[svcKey{"default", "web"}]; s.ProxmoxHost != "" || s.VMID != "" || s.Node != "n1" {
		t.Errorf("without a Node: %+v", s)
	}
}

func TestAnnouncementName(t *testing.T) {
	if got := announcementName("web", "talos-w1"); got != "web.talos-w1" {
		t.Errorf("name = %q", got)
	}
	long := strings.Repeat("n", 250)
	a, b := announcementName("web", long), announcementName("web", long+"x")
	if len(a) > 253 || a == b || !strings.HasPrefix(a, "web.") {
		t.Errorf("long node names: %q, %q", a, b)
	}
}

// TestCompactAnnouncement: the cached copy keeps what the writer reads back
// (name, owner, status) and drops the rest.
func TestCompactAnnouncement(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "pvelb.io/v1alpha1", "kind": "ServiceAnnouncement",
		"metadata": map[string]any{
			"name": "web.n1", "namespace": "default", "uid": "u1", "resourceVersion": "7",
			"labels":          map[string]any{names.LabelAnnouncedService: "web"},
			"ownerReferences": []any{map[string]any{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "s1"}},
		},
		"status": map[string]any{"service": "web", "node": "n1", "mode": "L2", "ips": []any{"192.0.2.10"}, "proxmoxHost": "pve1", "vmid": "101"},
	}}
	got, err := compactAnnouncement(u)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := toAnnouncement(got.(*v1alpha1.ServiceAnnouncement))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := cache.MetaNamespaceKeyFunc(sa)
	want := v1alpha1.ServiceAnnouncementStatus{Service: "web", Node: "n1", Mode: v1alpha1.AnnouncementL2, IPs: []string{"192.0.2.10"}, ProxmoxHost: "pve1", VMID: "101"}
	if key != "default/web.n1" || sa.UID != "u1" || len(sa.OwnerReferences) != 1 || sa.OwnerReferences[0].UID != "s1" ||
		!reflect.DeepEqual(sa.Status, want) || sa.Labels != nil {
		t.Errorf("compacted to %+v", sa)
	}
}
