package pve

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
	"k8s.io/klog/v2"
)

// Every Proxmox host serves the whole cluster's API, so a cluster configured
// with several URLs stays manageable while one host is down or rebooting for
// updates. The pool decides which host a request goes to:
//
//   - requests go to the first endpoint, in configuration order, that is up;
//   - an endpoint that gives no HTTP answer (refused, reset, timed out, TLS
//     failure) is marked down and the request moves on to the next one at
//     once, without waiting for the retry backoff;
//   - a down endpoint is tried again after a backoff (endpointRecheck,
//     doubling up to endpointRecheckMax): while another endpoint is up, by a
//     one-off GET /version in the background, so no request waits for a dead
//     host's timeout; when none is up, by the requests themselves;
//   - any HTTP answer, even an error, means the endpoint is up: the error is
//     about the request, not about the host, and trying another host would
//     get the same answer.
//
// An endpoint's outage therefore never reaches callers as anything but a
// NetworkError (transient), which InstancesV2 never reads as "VM gone".

const (
	endpointRecheck    = 5 * time.Second
	endpointRecheckMax = 2 * time.Minute
)

// endpoint is one Proxmox host serving the API.
type endpoint struct {
	api *proxmox.Client
	// url is the normalised API base; label is it without /api2/json, the
	// metrics label and what logs name.
	url   string
	label string

	// Guarded by pool.mu.
	down     bool
	failures int // consecutive
	retryAt  time.Time
	probing  bool
}

// pool tracks the health of a cluster's endpoints.
type pool struct {
	region  string
	metrics *Metrics
	now     func() time.Time
	// probe checks one down endpoint in the background (nil: never).
	probe func(ep *endpoint)

	mu  sync.Mutex
	eps []*endpoint
}

func newPool(region string, eps []*endpoint, m *Metrics) *pool {
	p := &pool{region: region, metrics: m, now: time.Now, eps: eps}
	for _, ep := range eps {
		m.endpointUp(region, ep.label, true)
	}
	return p
}

// order returns the endpoints one attempt should try, best first: those up in
// configuration order, then those down, soonest recheck first. Down endpoints
// due for a recheck are probed in the background while another one is up.
func (p *pool) order() []*endpoint {
	p.mu.Lock()
	now := p.now()
	var up, down, due []*endpoint
	for _, ep := range p.eps {
		if !ep.down {
			up = append(up, ep)
			continue
		}
		down = append(down, ep)
		if !ep.probing && !now.Before(ep.retryAt) {
			due = append(due, ep)
		}
	}
	slices.SortStableFunc(down, func(a, b *endpoint) int { return a.retryAt.Compare(b.retryAt) })
	probe := p.probe != nil && len(up) > 0
	if probe {
		for _, ep := range due {
			ep.probing = true
		}
	}
	p.mu.Unlock()
	if probe {
		for _, ep := range due {
			go p.probe(ep)
		}
	}
	return append(up, down...)
}

// report records the outcome of one attempt on ep and says whether the
// caller should move on to the next endpoint: only when ep gave no answer and
// the caller's own context has not ended (its deadline or cancellation says
// nothing about the host).
func (p *pool) report(ctx context.Context, ep *endpoint, err error) (next bool) {
	var ne *NetworkError
	switch {
	case !errors.As(err, &ne):
		p.succeeded(ep) // answered, whatever it said
		return false
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return false // the caller gave up; nothing learnt about the host
	}
	p.failed(ep, err)
	return true
}

func (p *pool) failed(ep *endpoint, err error) {
	p.metrics.endpointRequest(p.region, ep.label, false)
	p.mu.Lock()
	ep.failures++
	wait := endpointRecheck
	for i := 1; i < ep.failures && wait < endpointRecheckMax; i++ {
		wait *= 2
	}
	wait = min(wait, endpointRecheckMax)
	ep.retryAt = p.now().Add(wait)
	wasUp := !ep.down
	ep.down = true
	up := 0
	for _, o := range p.eps {
		if !o.down {
			up++
		}
	}
	several := len(p.eps) > 1
	p.mu.Unlock()
	if wasUp {
		p.metrics.endpointUp(p.region, ep.label, false)
		msg := "Proxmox API endpoint unreachable"
		if several {
			msg += "; using the cluster's other endpoints"
		}
		klog.InfoS(msg, "region", p.region, "endpoint", ep.label, "endpointsUp", up, "recheckIn", wait, "err", err.Error())
	}
}

func (p *pool) succeeded(ep *endpoint) {
	p.metrics.endpointRequest(p.region, ep.label, true)
	p.mu.Lock()
	wasDown := ep.down
	ep.down, ep.failures, ep.retryAt = false, 0, time.Time{}
	p.mu.Unlock()
	if wasDown {
		p.metrics.endpointUp(p.region, ep.label, true)
		klog.InfoS("Proxmox API endpoint answers again", "region", p.region, "endpoint", ep.label)
	}
}

// probed ends a background probe of ep.
func (p *pool) probed(ep *endpoint, err error) {
	if unreachable(err) {
		p.failed(ep, err)
	} else {
		p.succeeded(ep)
	}
	p.mu.Lock()
	ep.probing = false
	p.mu.Unlock()
}

// EndpointHealth is one endpoint as the pool sees it.
type EndpointHealth struct {
	URL string
	Up  bool
	// Failures counts consecutive attempts that got no answer.
	Failures int
}

// health returns every endpoint's state, in configuration order.
func (p *pool) health() []EndpointHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointHealth, 0, len(p.eps))
	for _, ep := range p.eps {
		out = append(out, EndpointHealth{URL: ep.label, Up: !ep.down, Failures: ep.failures})
	}
	return out
}

// unreachable: the attempt got no HTTP answer from the endpoint.
func unreachable(err error) bool {
	var ne *NetworkError
	return errors.As(err, &ne)
}

// endpointLabel is a normalised API base without /api2/json.
func endpointLabel(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api2/json")
}
