package announcer

import (
	"net/netip"
	"time"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
)

// claimState is what the election remembers between passes on this node.
type claimState struct {
	// winners: the last computed winner of every ARP/NDP VIP ("" when
	// nobody could be elected).
	winners map[netip.Addr]string
	// claimAt: VIPs this node won from a node that may still answer, and
	// when it may start answering them (Config.ClaimDelay).
	claimAt map[netip.Addr]time.Time
}

// delayedClaim is a VIP whose claim waits for its previous owner to stop.
type delayedClaim struct {
	ip       netip.Addr
	previous string
}

// claimDecision is the ARP/NDP outcome of one election pass for this node.
type claimDecision struct {
	// answer: what this node answers now.
	answer []Assignment
	// elected: assignments whose winner is new or changed (for the metric
	// and the log).
	elected []Assignment
	// delayed: claims that started waiting in this pass.
	delayed []delayedClaim
	next    claimState
}

// decideClaims turns the plan into what this node answers, apart from the
// sockets that do it. A VIP this node wins and does not serve yet is
// claimed at once only when its previous winner is known to be gone (dead or
// leaving: gone reports it); any other claim, from a live node or after
// this node saw no owner at all (it had no quorum, or is new), waits delay,
// so a previous owner beyond this node's view hears the news and stops
// first: a short gap rather than two answerers. serving reports what this
// node answers now.
func decideClaims(self string, plan []Assignment, prev claimState, serving func(netip.Addr) bool, gone func(string) bool,
	now time.Time, delay time.Duration) claimDecision {
	d := claimDecision{next: claimState{
		winners: make(map[netip.Addr]string, len(plan)),
		claimAt: map[netip.Addr]time.Time{},
	}}
	for _, a := range plan {
		if a.Mode == v1alpha1.AnnounceBGP {
			continue
		}
		before, known := prev.winners[a.IP]
		if !known || before != a.Winner {
			d.elected = append(d.elected, a)
		}
		d.next.winners[a.IP] = a.Winner
		if a.Winner != self {
			continue
		}
		if !serving(a.IP) {
			at, waiting := prev.claimAt[a.IP]
			if !waiting && !(known && before != "" && gone(before)) {
				at, waiting = now.Add(delay), true
				d.delayed = append(d.delayed, delayedClaim{ip: a.IP, previous: before})
			}
			if waiting && now.Before(at) {
				d.next.claimAt[a.IP] = at
				continue
			}
		}
		d.answer = append(d.answer, a)
	}
	return d
}
