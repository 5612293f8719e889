package speakerproc

import "github.com/prometheus/client_golang/prometheus"

// The same series the speaker exported when it was linked into the
// announcer, so dashboards and alerts keep working.
var (
	// SessionUpDesc describes pvelb_announcer_bgp_session_up, also for an
	// invalid metric when the states cannot be read.
	SessionUpDesc = prometheus.NewDesc("pvelb_announcer_bgp_session_up",
		"1 when the BGP session to the peer is established, else 0.", []string{"peer", "address"}, nil)
	sessionStateDesc = prometheus.NewDesc("pvelb_announcer_bgp_session_state",
		"BGP session FSM state (1 for the current state).", []string{"peer", "address", "state"}, nil)
	advertisedDesc = prometheus.NewDesc("pvelb_announcer_bgp_routes_advertised",
		"Routes this speaker has advertised to the peer.", []string{"peer", "address"}, nil)
	originatedDesc = prometheus.NewDesc("pvelb_announcer_bgp_routes",
		"VIP routes this node originates.", nil, nil)
)

// CollectStates sends the metrics of s: per peer its session state and the
// routes it holds from us, and the routes this node originates.
func CollectStates(ch chan<- prometheus.Metric, s States) {
	for _, st := range s.Peers {
		addr := st.Address.String()
		up := 0.0
		if st.State == "established" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(SessionUpDesc, prometheus.GaugeValue, up, st.Name, addr)
		ch <- prometheus.MustNewConstMetric(sessionStateDesc, prometheus.GaugeValue, 1, st.Name, addr, st.State)
		ch <- prometheus.MustNewConstMetric(advertisedDesc, prometheus.GaugeValue, float64(st.Advertised), st.Name, addr)
	}
	ch <- prometheus.MustNewConstMetric(originatedDesc, prometheus.GaugeValue, float64(s.Routes))
}

// DescribeStates sends the descriptions of the series CollectStates sends.
func DescribeStates(ch chan<- *prometheus.Desc) {
	ch <- SessionUpDesc
	ch <- sessionStateDesc
	ch <- advertisedDesc
	ch <- originatedDesc
}
