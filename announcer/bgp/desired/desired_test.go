package desired

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

func validSpec() v1alpha1.BGPPeerSpec {
	return v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.1", PeerASN: 64500, MyASN: 64512, PeerPort: 179, HoldTime: metav1.Duration{Duration: 90 * time.Second}}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}

func TestSelectPeers(t *testing.T) {
	mk := func(name string, sel *metav1.LabelSelector) *v1alpha1.BGPPeer {
		return &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{NodeSelector: sel}}
	}
	peers := []*v1alpha1.BGPPeer{
		mk("all", nil),
		mk("rack-a", &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}),
		mk("not-edge", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "edge", Operator: metav1.LabelSelectorOpDoesNotExist}}}),
		mk("broken", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Near"}}}),
	}
	got, err := SelectPeers(peers, map[string]string{"rack": "a", "edge": "true"})
	checkErr(t, err, "BGPPeer broken: spec.nodeSelector")
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "all,rack-a" {
		t.Fatalf("selected %v, want all,rack-a", names)
	}
}

func TestPasswordKey(t *testing.T) {
	if _, _, _, ok := PasswordKey(validSpec()); ok {
		t.Fatal("no ref but ok")
	}
	s := validSpec()
	s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "ns", Name: "n"}
	if ns, n, k, ok := PasswordKey(s); !ok || ns != "ns" || n != "n" || k != "password" {
		t.Fatalf("got %s %s %s %v", ns, n, k, ok)
	}
}

func TestRouterIDFor(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::11")
	if got := RouterIDFor("n1", []netip.Addr{v6, netip.MustParseAddr("::ffff:192.0.2.11")}); got != netip.MustParseAddr("192.0.2.11") {
		t.Fatalf("got %s, want the node's IPv4 address", got)
	}
	a, b := RouterIDFor("node-a", []netip.Addr{v6}), RouterIDFor("node-b", []netip.Addr{v6})
	if !a.Is4() || a == b || a != RouterIDFor("node-a", nil) {
		t.Fatalf("IPv6-only router IDs must be IPv4, stable and differ per node: %s %s", a, b)
	}
}

func TestVIPFromPool(t *testing.T) {
	lp := uint32(10)
	pool := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{Announce: v1alpha1.Announce{Mode: v1alpha1.AnnounceBGP, Communities: []string{"no-export"}, LocalPreference: &lp}}}
	ip := netip.MustParseAddr("198.51.100.5")
	v := VIPFromPool(ip, pool)
	if v.IP != ip || len(v.Communities) != 1 || v.Communities[0] != "no-export" || *v.LocalPreference != 10 {
		t.Fatalf("VIP %+v", v)
	}
	if v := VIPFromPool(ip, nil); v.Communities != nil || v.LocalPreference != nil {
		t.Fatalf("VIP without a pool %+v", v)
	}
}
