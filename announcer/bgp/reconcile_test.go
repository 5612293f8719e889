package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
func i32(v int32) *int32                   { return &v }

func validSpec() v1alpha1.BGPPeerSpec {
	return v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.1", PeerASN: 64500, MyASN: 64512, PeerPort: 179, HoldTime: metav1.Duration{Duration: 90 * time.Second}}
}

func TestPeerFromSpec(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*PeerInput)
		want    func(Peer) bool
		wantErr string
	}{
		{name: "defaults", mod: func(*PeerInput) {}, want: func(p Peer) bool {
			return p.Address == netip.MustParseAddr("192.0.2.1") && p.ASN == 64500 && p.LocalASN == 64512 && p.Port == 179 && p.HoldTime == 90*time.Second && !p.GracefulRestart
		}},
		{name: "everything", mod: func(in *PeerInput) {
			in.Spec.PeerPort = 1179
			in.Spec.HoldTime = metav1.Duration{Duration: 9 * time.Second}
			in.Spec.KeepaliveTime = dur(3 * time.Second)
			in.Spec.EBGPMultiHop = i32(4)
			in.Spec.SourceAddress = "192.0.2.11"
			in.Spec.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: true}
			in.Spec.PasswordSecretRef = &v1alpha1.SecretKeyRef{Namespace: "kube-system", Name: "bgp"}
			in.Password = "s3cret"
		}, want: func(p Peer) bool {
			return p.Port == 1179 && p.HoldTime == 9*time.Second && p.KeepaliveTime == 3*time.Second && p.EBGPMultihopTTL == 4 &&
				p.SourceAddress == netip.MustParseAddr("192.0.2.11") && p.GracefulRestart && p.RestartTime == DefaultRestartTime && p.Password == "s3cret"
		}},
		{name: "restart time", mod: func(in *PeerInput) {
			in.Spec.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: true, RestartTime: dur(30 * time.Second)}
		}, want: func(p Peer) bool { return p.RestartTime == 30*time.Second }},
		{name: "graceful restart disabled", mod: func(in *PeerInput) {
			in.Spec.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: false, RestartTime: dur(30 * time.Second)}
		}, want: func(p Peer) bool { return !p.GracefulRestart }},
		{name: "bad address", mod: func(in *PeerInput) { in.Spec.PeerAddress = "router.example" }, wantErr: `BGPPeer tor: spec.peerAddress: "router.example" is not an IP address`},
		{name: "bad source", mod: func(in *PeerInput) { in.Spec.SourceAddress = "x" }, wantErr: "BGPPeer tor: spec.sourceAddress"},
		{name: "hold zero", mod: func(in *PeerInput) { in.Spec.HoldTime = metav1.Duration{} }, wantErr: "spec.holdTime: 0s (no keepalives) is not supported"},
		{name: "no myASN", mod: func(in *PeerInput) { in.Spec.MyASN = 0 }, wantErr: "spec.myASN"},
		{name: "multihop on iBGP", mod: func(in *PeerInput) { in.Spec.PeerASN = 64512; in.Spec.EBGPMultiHop = i32(3) }, wantErr: "BGPPeer tor: peer tor (192.0.2.1): ebgpMultiHop: applies only to eBGP"},
		{name: "multihop range", mod: func(in *PeerInput) { in.Spec.EBGPMultiHop = i32(300) }, wantErr: "spec.ebgpMultiHop: must be 2-255, got 300"},
		{name: "password without ref", mod: func(in *PeerInput) { in.Password = "x" }, wantErr: "spec.passwordSecretRef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := PeerInput{Name: "tor", Spec: validSpec()}
			tt.mod(&in)
			p, err := PeerFromSpec(in)
			checkErr(t, err, tt.wantErr)
			if err == nil && !tt.want(p) {
				t.Fatalf("unexpected peer %+v", p)
			}
			if err != nil && strings.Contains(err.Error(), in.Password) && in.Password != "" {
				t.Fatalf("error reveals the password: %v", err)
			}
		})
	}
}

func TestVIPRoute(t *testing.T) {
	lp := uint32(10)
	pool := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{Announce: v1alpha1.Announce{Mode: v1alpha1.AnnounceBGP, Communities: []string{"no-export"}, LocalPreference: &lp}}}
	r := vipRoute(desired.VIPFromPool(netip.MustParseAddr("::ffff:198.51.100.5"), pool))
	if r.Prefix != netip.MustParsePrefix("198.51.100.5/32") || r.Communities[0] != "no-export" || *r.LocalPreference != 10 {
		t.Fatalf("route %+v", r)
	}
	if r := vipRoute(VIP{IP: netip.MustParseAddr("2001:db8::5")}); r.Prefix.Bits() != 128 {
		t.Fatalf("route %+v", r)
	}
}

// TestReconcileStopped drives Reconcile on a speaker that is not started
// (no network): state is kept and errors name the object and field, and a
// bad edit of a configured BGPPeer keeps the configured session.
func TestReconcileStopped(t *testing.T) {
	s, err := New(testConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := PeerInput{Name: "tor", Spec: validSpec()}
	if err := s.Reconcile(ctx, Desired{Peers: []PeerInput{good}, VIPs: []VIP{{IP: netip.MustParseAddr("198.51.100.5")}}}); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Spec.PeerAddress = "nonsense"
	err = s.Reconcile(ctx, Desired{Peers: []PeerInput{bad}, VIPs: []VIP{{IP: netip.MustParseAddr("198.51.100.5"), Communities: []string{"oops"}}}})
	checkErr(t, err, "BGPPeer tor: spec.peerAddress")
	checkErr(t, err, `route 198.51.100.5/32: communities[0]: "oops"`)
	st, err := s.PeerStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Name != "tor" || st[0].State != StateIdle {
		t.Fatalf("states %+v: the configured peer must survive a bad edit", st)
	}
	if len(s.routes) != 1 {
		t.Fatalf("routes %v: the advertised route must survive a bad edit", s.routes)
	}
	if err := s.Reconcile(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.PeerStates(ctx); len(st) != 0 || len(s.routes) != 0 {
		t.Fatalf("empty desired state left %v peers / %d routes", st, len(s.routes))
	}
}
