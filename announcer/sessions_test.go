package announcer

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/announcer/bgp/speakerproc"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

func TestSessionChanges(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	now := sessionStates(speakerproc.States{Peers: []speakerproc.PeerState{
		{Name: "tor-a", Address: netip.MustParseAddr("198.51.100.1"), State: "established", Since: at.Add(300 * time.Millisecond)},
		{Name: "tor-b", Address: netip.MustParseAddr("198.51.100.2"), State: "active"},
	}})
	if s := now["tor-a"]; s.State != "established" || s.Since == nil || !s.Since.Time.Equal(at) {
		t.Fatalf("tor-a = %+v, want established since %s (seconds, as the apiserver stores)", s, at)
	}
	since := metav1.NewTime(at)
	cases := []struct {
		name    string
		written map[string]v1alpha1.BGPSession
		want    []string
	}{
		{"first pass writes every session", nil, []string{"tor-a", "tor-b"}},
		{"unchanged writes nothing", map[string]v1alpha1.BGPSession{
			"tor-a": {State: "established", Since: &since}, "tor-b": {State: "active"},
		}, nil},
		{"a state change and a peer that no longer selects this node", map[string]v1alpha1.BGPSession{
			"tor-a": {State: "established", Since: &since}, "tor-b": {State: "connect"}, "old": {State: "established"},
		}, []string{"old", "tor-b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sessionChanges(tc.written, now); !slices.Equal(got, tc.want) {
				t.Errorf("changes = %v, want %v", got, tc.want)
			}
		})
	}
}
