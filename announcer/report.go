package announcer

import (
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/names"
)

// reportUnannounced counts the addresses nobody may announce by reason and,
// on the first electable announcer by name only, warns on their Services when
// the reason appears or changes.
func (c *Controller) reportUnannounced(plan []Assignment) {
	counts := map[string]int{}
	current := map[netip.Addr]string{}
	for _, a := range plan {
		if a.Code != "" {
			counts[a.Code]++
			current[a.IP] = a.Code + ": " + a.Reason
		}
	}
	for _, code := range UnannouncedReasons {
		c.metrics.unannounced.WithLabelValues(code).Set(float64(counts[code]))
	}
	electable := c.cfg.Membership.ElectableNodes()
	reporter := len(electable) > 0 && electable[0] == c.cfg.Node
	for _, a := range plan {
		r, ok := current[a.IP]
		if !ok || c.unannounced[a.IP] == r {
			continue
		}
		klog.InfoS("Nobody may announce an address", "ip", a.IP, "reason", a.Code, "detail", a.Reason, "services", a.Services)
		if !reporter {
			continue
		}
		for _, key := range a.Services {
			ns, name, _ := strings.Cut(key, "/")
			if svc, err := c.services.Services(ns).Get(name); err == nil {
				c.recorder.Eventf(svc, v1.EventTypeWarning, names.EventNotAnnounced, "No node may announce %s: %s (%s)", a.IP, a.Reason, a.Code)
			}
		}
	}
	c.unannounced = current
}
