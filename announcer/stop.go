package announcer

import (
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/eligibility"
)

// How an announcer stops (SIGTERM). kube-proxy's conntrack for a VIP lives
// on the node that answers it, so every move of a VIP resets the
// established connections through it. A DaemonSet rollout restarts every
// announcer while its node stays: handing the VIPs over and taking them
// back would move each twice. So a node that stays restarts in place, and a
// node that goes hands over.

// stopInPlace decides from this node's Node object (nil: not in the API)
// whether its announcer restarts in place, and says why not otherwise. A
// node is going when it is deleted or tainted for deletion, cordoned (a
// drain before maintenance or a reboot), excluded from load balancers,
// reported NotReady (the kubelet says so when the node shuts down), or
// unknown to the API.
func stopInPlace(n *v1.Node) (inPlace bool, why string) {
	switch {
	case n == nil:
		return false, "the Node is not in the API"
	case eligibility.IsLeaving(n):
		return false, "the Node is being deleted"
	case n.Spec.Unschedulable:
		return false, "the Node is cordoned"
	case eligibility.IsExcluded(n):
		return false, "the Node is excluded from load balancers"
	case notReady(n):
		return false, "the Node is not Ready"
	}
	return true, "the Node stays"
}

// Stop stops this node's announcing for a SIGTERM: in place when
// Config.RestartInPlace and the Node stays (Restart), else by a graceful
// handover (Handover).
func (c *Controller) Stop() {
	self, err := c.nodes.Get(c.cfg.Node)
	if errors.IsNotFound(err) {
		self = nil
	} else if err != nil {
		klog.ErrorS(err, "Cannot read this node; handing over")
		self = nil
	}
	inPlace, why := stopInPlace(self)
	if !c.cfg.RestartInPlace {
		inPlace, why = false, "restart in place is off"
	}
	if inPlace {
		klog.InfoS("Stopping in place: peers keep this node's VIPs here until it is back", "why", why)
		c.restartInPlace()
		return
	}
	klog.InfoS("Stopping: handing over ARP/NDP and withdrawing BGP routes", "why", why)
	c.Handover()
}

// restartInPlace stops answering at once, tells the peers this node is
// restarting (they keep its VIPs elected here for their restart grace) and
// withdraws BGP routes. Clients keep their neighbour entries for this node,
// whose kube-proxy keeps serving their connections meanwhile; the restarted
// announcer answers again once it holds quorum.
func (c *Controller) restartInPlace() {
	c.mu.Lock()
	c.leaving = true
	c.mu.Unlock()
	bgpDone := make(chan struct{})
	go func() { defer close(bgpDone); c.stopBGP(3 * time.Second) }()
	// Closes the fence before the first message leaves.
	c.cfg.Membership.Restart()
	c.closeResponders()
	<-bgpDone
}

// Handover stops this node gracefully: it tells the peers it leaves (they
// elect successors at once), keeps answering until every won IP that has a
// live successor was claimed by it (its gratuitous ARP / unsolicited NA seen
// on the wire) or HandoverTimeout passed, then stops answering.
//
// BGP routes are withdrawn at the same time (the other nodes' routes stay
// on the routers, so there is nothing to wait for) before the sessions close.
func (c *Controller) Handover() {
	// Keep answering through the handover only what this node could answer
	// a moment ago: a node in a minority stays silent while it leaves.
	c.handingOver.Store(c.cfg.Membership.MayAnswer())
	c.mu.Lock()
	c.leaving = true
	won := make([]netip.Addr, 0, len(c.won))
	for ip := range c.won {
		won = append(won, ip)
	}
	// Each VIP is let go the moment its successor claims it, so no VIP
	// claimed early is answered by two nodes while later ones wait.
	for _, r := range c.responders {
		r.arp.YieldOnClaim()
		r.ndp.YieldOnClaim()
	}
	c.mu.Unlock()
	bgpDone := make(chan struct{})
	go func() { defer close(bgpDone); c.stopBGP(3 * time.Second) }()
	defer func() { <-bgpDone }()
	t0 := time.Now()
	c.cfg.Membership.Leave()
	deadline := t0.Add(c.cfg.HandoverTimeout)
	pending := won
	for len(pending) > 0 && time.Now().Before(deadline) {
		pending = slices.DeleteFunc(pending, func(ip netip.Addr) bool { return c.claimed(ip, t0) })
		if len(pending) > 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	klog.InfoS("Handed over", "ips", len(won), "unclaimed", len(pending), "took", time.Since(t0).Round(time.Millisecond))
	c.closeResponders()
}

// mayAnswer is the responders' fence: the membership's permission, or a
// graceful handover in progress.
func (c *Controller) mayAnswer() bool {
	return c.handingOver.Load() || c.cfg.Membership.MayAnswer()
}

func (c *Controller) claimed(ip netip.Addr, t0 time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.responders {
		if r.arp.ClaimedSince(ip, t0) || r.ndp.ClaimedSince(ip, t0) {
			return true
		}
	}
	return false
}
