package announcer

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

func TestDecideClaims(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.10")
	now := time.Unix(1000, 0)
	const delay = 50 * time.Millisecond
	won := func(winner string) []Assignment {
		return []Assignment{{IP: vip, Winner: winner, Mode: v1alpha1.AnnounceARP}}
	}
	gone := func(dead ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(dead, n) }
	}
	tests := []struct {
		name        string
		plan        []Assignment
		prev        claimState
		serving     bool
		gone        func(string) bool
		wantAnswer  bool
		wantDelayed bool
		wantElected bool
	}{
		{name: "failover from a dead owner is immediate", plan: won("self"),
			prev: claimState{winners: map[netip.Addr]string{vip: "n2"}}, gone: gone("n2"),
			wantAnswer: true, wantElected: true},
		{name: "from a live owner: wait the claim delay", plan: won("self"),
			prev: claimState{winners: map[netip.Addr]string{vip: "n2"}}, gone: gone(),
			wantDelayed: true, wantElected: true},
		{name: "no owner seen (this node had no quorum): wait", plan: won("self"),
			prev: claimState{winners: map[netip.Addr]string{vip: ""}}, gone: gone(),
			wantDelayed: true, wantElected: true},
		{name: "a VIP never elected before: wait", plan: won("self"), gone: gone(),
			wantDelayed: true, wantElected: true},
		{name: "still waiting", plan: won("self"),
			prev: claimState{winners: map[netip.Addr]string{vip: "self"}, claimAt: map[netip.Addr]time.Time{vip: now.Add(time.Millisecond)}},
			gone: gone()},
		{name: "waited out", plan: won("self"),
			prev: claimState{winners: map[netip.Addr]string{vip: "self"}, claimAt: map[netip.Addr]time.Time{vip: now}},
			gone: gone(), wantAnswer: true},
		{name: "already serving: keep answering", plan: won("self"), serving: true,
			prev: claimState{winners: map[netip.Addr]string{vip: "self"}}, gone: gone(), wantAnswer: true},
		{name: "another node won", plan: won("n2"),
			prev: claimState{winners: map[netip.Addr]string{vip: "self"}}, gone: gone(), wantElected: true},
		{name: "BGP assignments are not ARP/NDP claims", plan: []Assignment{{IP: vip, Winner: "self", Mode: v1alpha1.AnnounceBGP}},
			gone: gone()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decideClaims("self", tt.plan, tt.prev, func(netip.Addr) bool { return tt.serving }, tt.gone, now, delay)
			if got := len(d.answer) == 1; got != tt.wantAnswer {
				t.Errorf("answers %v, want %v", d.answer, tt.wantAnswer)
			}
			if got := len(d.delayed) == 1; got != tt.wantDelayed {
				t.Errorf("delayed %v, want %v", d.delayed, tt.wantDelayed)
			}
			if got := len(d.elected) == 1; got != tt.wantElected {
				t.Errorf("elected %v, want %v", d.elected, tt.wantElected)
			}
			at, waits := d.next.claimAt[vip]
			if waits != (tt.wantDelayed || (!tt.wantAnswer && tt.prev.claimAt != nil && tt.plan[0].Winner == "self")) {
				t.Errorf("next claimAt %v", d.next.claimAt)
			}
			if tt.wantDelayed && !at.Equal(now.Add(delay)) {
				t.Errorf("claim at %s, want now+%s", at, delay)
			}
		})
	}
}
