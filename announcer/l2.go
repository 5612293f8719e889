package announcer

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/arp"
	"github.com/pvelb/pvelb/announcer/claimlog"
	"github.com/pvelb/pvelb/announcer/ndp"
	"github.com/pvelb/pvelb/names"
)

// The L2 applier: it owns this node's ARP and NDP responders and makes
// them answer for exactly the VIPs decideClaims gives this node.

type l2 struct {
	arp    *arp.Responder
	ndp    *ndp.Responder
	cancel context.CancelFunc
	done   chan struct{} // closed once both responders have stopped
	asked  atomic.Bool   // close was called: a stop is not a failure
}

// stopped reports whether the pair has stopped (a socket failed for good).
func (r *l2) stopped() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// close stops both responders and releases their sockets.
func (r *l2) close() {
	r.asked.Store(true)
	r.cancel()
	<-r.done
	if r.arp != nil {
		_ = r.arp.Close()
	}
	if r.ndp != nil {
		_ = r.ndp.Close()
	}
}

// reopenDelay spaces out reopening a responder whose socket failed, so an
// interface that keeps failing costs one attempt a second, not a busy loop.
const reopenDelay = time.Second

// reapStopped drops responders whose sockets failed, so this reconcile
// reopens them. Without it a node that keeps winning the election would
// answer nothing for its VIPs and no other node would take over.
func (c *Controller) reapStopped() {
	for ifname, r := range c.responders {
		if r.stopped() {
			klog.InfoS("Reopening ARP/NDP responder after its socket failed", "interface", ifname)
			r.close()
			delete(c.responders, ifname)
		}
	}
}

// applyL2 makes the responders answer for exactly the given assignments,
// on their pools' interfaces (or the default one), opening responders as
// needed, and records an Announcing Event for every VIP newly answered.
// Called with c.mu held.
func (c *Controller) applyL2(nodes []*v1.Node, answer []Assignment) {
	byIface := map[string][]netip.Addr{}
	won := map[netip.Addr]string{}
	var defIface string
	var defErr error
	for _, a := range answer {
		ifaces := a.Interfaces
		if len(ifaces) == 0 {
			// Once per pass, not per VIP.
			if defIface == "" && defErr == nil {
				defIface, defErr = c.defaultInterface(nodes)
			}
			if defErr != nil {
				klog.ErrorS(defErr, "Cannot announce: no interface", "ip", a.IP)
				continue
			}
			ifaces = []string{defIface}
		}
		for _, i := range ifaces {
			byIface[i] = append(byIface[i], a.IP)
		}
		won[a.IP] = strings.Join(ifaces, ",")
	}
	c.reapStopped()
	for ifname := range byIface {
		if _, ok := c.responders[ifname]; !ok {
			r, err := openL2(ifname, c.mayAnswer, c.cfg.Membership.MayAnswer, c.foreign, func() { time.AfterFunc(reopenDelay, c.trigger) })
			if err != nil {
				klog.ErrorS(err, "Cannot open ARP/NDP responder; leaving the elections of its pools", "interface", ifname)
				for _, ip := range byIface[ifname] {
					delete(won, ip)
				}
				// The next link check reports the pools unservable, so
				// another node is elected instead of this one answering
				// nothing.
				c.openFailed[ifname] = err
				continue
			}
			delete(c.openFailed, ifname)
			c.responders[ifname] = r
		}
	}
	for ifname, r := range c.responders {
		r.arp.SetIPs(byIface[ifname])
		r.ndp.SetIPs(byIface[ifname])
	}
	for _, a := range answer {
		ifs, ok := won[a.IP]
		if !ok {
			continue
		}
		if _, had := c.won[a.IP]; had {
			continue
		}
		klog.InfoS("Announcing", "ip", a.IP, "interfaces", ifs, "services", a.Services)
		for _, key := range a.Services {
			ns, name, _ := strings.Cut(key, "/")
			if svc, err := c.services.Services(ns).Get(name); err == nil {
				c.recorder.Eventf(svc, v1.EventTypeNormal, names.EventAnnouncing,
					"Node %s answers for %s (ARP/NDP on %s)", c.cfg.Node, a.IP, ifs)
			}
		}
	}
	c.won = won
	c.metrics.announced.Set(float64(len(won)))
}

// openL2 starts the ARP and NDP responders of one interface, recording
// other MACs' claims in claims. They answer
// only while fence (the membership's MayAnswer) allows, and re-assert a VIP
// against another MAC's claim while reassert does. If either stops on
// its own (its socket failed), both are stopped and onStop is called, so the
// controller reopens them.
func openL2(ifname string, fence, reassert func() bool, claims *claimlog.Log, onStop func()) (*l2, error) {
	a, err := arp.New(ifname)
	if err != nil {
		return nil, err
	}
	n, err := ndp.New(ifname)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.SetFence(fence)
	n.SetFence(fence)
	// Re-assert only with the membership's own permission: never while
	// handing over, when the successor's claim is what this node awaits.
	a.SetReassert(reassert)
	n.SetReassert(reassert)
	a.SetClaimLog(claims)
	n.SetClaimLog(claims)
	ctx, cancel := context.WithCancel(context.Background())
	r := &l2{arp: a, ndp: n, cancel: cancel, done: make(chan struct{})}
	go func() {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer cancel()
			if err := a.Run(ctx); err != nil {
				klog.ErrorS(err, "ARP responder stopped", "interface", ifname)
			}
		}()
		go func() {
			defer wg.Done()
			defer cancel()
			if err := n.Run(ctx); err != nil {
				klog.ErrorS(err, "NDP responder stopped", "interface", ifname)
			}
		}()
		wg.Wait()
		close(r.done)
		if !r.asked.Load() && onStop != nil {
			onStop()
		}
	}()
	klog.InfoS("Opened ARP/NDP responder", "interface", ifname, "mac", a.HardwareAddr())
	return r, nil
}

func (c *Controller) closeResponders() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, r := range c.responders {
		r.close()
		delete(c.responders, name)
	}
	c.won = map[netip.Addr]string{}
	c.metrics.announced.Set(0)
}
