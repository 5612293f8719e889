package bgp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	sessionUpDesc = prometheus.NewDesc("pvelb_announcer_bgp_session_up",
		"1 when the BGP session to the peer is established, else 0.", []string{"peer", "address"}, nil)
	sessionStateDesc = prometheus.NewDesc("pvelb_announcer_bgp_session_state",
		"BGP session FSM state (1 for the current state).", []string{"peer", "address", "state"}, nil)
	advertisedDesc = prometheus.NewDesc("pvelb_announcer_bgp_routes_advertised",
		"Routes this speaker has advertised to the peer.", []string{"peer", "address"}, nil)
	originatedDesc = prometheus.NewDesc("pvelb_announcer_bgp_routes",
		"VIP routes this node originates.", nil, nil)
)

// collector reads the speaker's state at scrape time, so the figures are
// never stale and nothing needs updating on every FSM change.
type collector struct{ s *Speaker }

// NewCollector returns a Prometheus collector of s's sessions and routes.
func NewCollector(s *Speaker) prometheus.Collector { return collector{s} }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionUpDesc
	ch <- sessionStateDesc
	ch <- advertisedDesc
	ch <- originatedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	states, err := c.s.PeerStates(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sessionUpDesc, err)
		return
	}
	for _, st := range states {
		addr := st.Address.String()
		up := 0.0
		if st.State == StateEstablished {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(sessionUpDesc, prometheus.GaugeValue, up, st.Name, addr)
		ch <- prometheus.MustNewConstMetric(sessionStateDesc, prometheus.GaugeValue, 1, st.Name, addr, string(st.State))
		ch <- prometheus.MustNewConstMetric(advertisedDesc, prometheus.GaugeValue, float64(st.Advertised), st.Name, addr)
	}
	c.s.mu.Lock()
	n := len(c.s.routes)
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(originatedDesc, prometheus.GaugeValue, float64(n))
}
