package lab

import (
	"context"
	"sync"
	"time"

	"github.com/pvelb/pvelb/test/datapath"
	"github.com/pvelb/pvelb/test/netlab"
)

// httpProber sends an HTTP GET to a URL every interval, each on a fresh
// connection from the client, without waiting for the previous one: a
// request stuck in a dead path must not delay the next, or the outage
// would be measured in TCP retransmission timeouts instead of in the
// failover's time.
type httpProber struct {
	from    *netlab.Host
	url     string
	timeout time.Duration

	mu   sync.Mutex
	rec  pingRecord
	last map[string]int // answers per pod
	wg   sync.WaitGroup
}

func newHTTPProber(from *netlab.Host, url string) *httpProber {
	return &httpProber{from: from, url: url, timeout: time.Second,
		rec: pingRecord{Sent: map[int]time.Time{}, Recv: map[int]time.Time{}}, last: map[string]int{}}
}

// run probes until ctx ends, then waits for the requests in flight.
func (p *httpProber) run(ctx context.Context, interval time.Duration) pingRecord {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		p.mu.Lock()
		p.rec.Sent[seq] = time.Now()
		p.mu.Unlock()
		p.wg.Add(1)
		go func(seq int) {
			defer p.wg.Done()
			a, err := datapath.Get(context.WithoutCancel(ctx), p.from, p.url, p.timeout)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.rec.Recv[seq] = time.Now()
			p.last[a.Pod]++
			p.mu.Unlock()
		}(seq)
		select {
		case <-ctx.Done():
			p.wg.Wait()
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.rec
		case <-tick.C:
		}
	}
}

// answeredAfter reports whether a request sent at or after t was answered.
func (p *httpProber) answeredAfter(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq, r := range p.rec.Recv {
		if !p.rec.Sent[seq].Before(t) && !r.IsZero() {
			return true
		}
	}
	return false
}

// pods returns how many answers each pod gave.
func (p *httpProber) pods() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.last {
		out[k] = v
	}
	return out
}
