package bgp

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pvelb/pvelb/announcer/bgp/speakerproc"
)

// States reports the sessions and originated routes in the form the
// speaker process sends to the announcer, which exports them as metrics.
func (s *Speaker) States(ctx context.Context) (speakerproc.States, error) {
	peers, err := s.PeerStates(ctx)
	if err != nil {
		return speakerproc.States{}, err
	}
	out := speakerproc.States{Peers: make([]speakerproc.PeerState, 0, len(peers)), Routes: s.RouteCount()}
	for _, p := range peers {
		out.Peers = append(out.Peers, speakerproc.PeerState{Name: p.Name, Address: p.Address, ASN: p.ASN,
			State: string(p.State), Since: p.Since, Advertised: p.Advertised})
	}
	return out, nil
}

// collector reads the speaker's state at scrape time, so the figures are
// never stale and nothing needs updating on every FSM change. It exports the
// same series as the announcer does for its speaker process.
type collector struct{ s *Speaker }

// NewCollector returns a Prometheus collector of s's sessions and routes.
func NewCollector(s *Speaker) prometheus.Collector { return collector{s} }

func (collector) Describe(ch chan<- *prometheus.Desc) { speakerproc.DescribeStates(ch) }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.s.States(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(speakerproc.SessionUpDesc, err)
		return
	}
	speakerproc.CollectStates(ch, st)
}
