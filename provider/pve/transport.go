package pve

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pvelb/pvelb/provider/promreg"
)

// go-proxmox reduces every failure to a string (and 401/403 to one sentinel),
// and for statuses it does not know (502, 595, ...) it may even decode an
// error body as success. The statusRecorder sits under it and writes what the
// server really answered into an exchange carried in the request's context, so
// the client decides on the status, never on go-proxmox's error text.

// maxErrorBody bounds how much of an error response we keep.
const maxErrorBody = 64 << 10

// exchange is what one HTTP attempt got back.
type exchange struct {
	mu       sync.Mutex
	answered bool
	status   int
	reason   string
	body     []byte // error responses only
}

func (e *exchange) record(res *http.Response) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.answered = true
	e.status = res.StatusCode
	e.reason = strings.TrimSpace(strings.TrimPrefix(res.Status, strconv.Itoa(res.StatusCode)))
}

func (e *exchange) setBody(b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.body = b
}

func (e *exchange) result() (answered bool, status int, reason string, body []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.answered, e.status, e.reason, e.body
}

type exchangeKey struct{}

func withExchange(ctx context.Context, ex *exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, ex)
}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// statusRecorder is the http.RoundTripper under go-proxmox.
type statusRecorder struct {
	base http.RoundTripper
}

func (s *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := s.base.RoundTrip(req)
	if err != nil || res == nil {
		return res, err
	}
	ex := exchangeFrom(req.Context())
	if ex == nil {
		return res, nil
	}
	ex.record(res)
	if res.StatusCode < 200 || res.StatusCode > 299 {
		// Keep the error body (400 "errors", newer servers' "message") and hand
		// go-proxmox an equivalent reader.
		b, rerr := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
		_ = res.Body.Close()
		if rerr == nil {
			ex.setBody(b)
		}
		res.Body = io.NopCloser(bytes.NewReader(b))
	}
	return res, nil
}

// Metrics are the Proxmox client's Prometheus metrics. One value serves every
// client of the process; the region label tells clusters apart.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	up       *prometheus.GaugeVec
	attempts *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, useful in tests). Calling it again with the same registry
// returns collectors that share the already registered series.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pvelb_proxmox_requests_total",
			Help: "Proxmox API requests by endpoint template, method and HTTP status code (\"error\" when no response arrived).",
		}, []string{"region", "endpoint", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pvelb_proxmox_request_duration_seconds",
			Help:    "Duration of Proxmox API requests, one observation per attempt.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"region", "endpoint", "method"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pvelb_proxmox_api_endpoint_up",
			Help: "1 while a Proxmox API endpoint (one of a cluster's urls) is in use or usable, 0 after it gave no answer and until it answers again.",
		}, []string{"region", "url"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pvelb_proxmox_api_endpoint_attempts_total",
			Help: "Proxmox API request attempts by endpoint (one of a cluster's urls) and result: \"answered\" (any HTTP status) or \"unreachable\" (no answer, the request moved to the next endpoint).",
		}, []string{"region", "url", "result"}),
	}
	if reg == nil {
		return m
	}
	m.requests = promreg.Register(reg, m.requests)
	m.duration = promreg.Register(reg, m.duration)
	m.up = promreg.Register(reg, m.up)
	m.attempts = promreg.Register(reg, m.attempts)
	return m
}

func (m *Metrics) endpointUp(region, url string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.up.WithLabelValues(region, url).Set(v)
}

func (m *Metrics) endpointRequest(region, url string, ok bool) {
	if m == nil {
		return
	}
	result := "unreachable"
	if ok {
		result = "answered"
	}
	m.attempts.WithLabelValues(region, url, result).Inc()
}

// observe records one attempt. code is the HTTP status, or 0 when the request
// got no response.
func (m *Metrics) observe(region, endpoint, method string, code int, d time.Duration) {
	if m == nil {
		return
	}
	c := "error"
	if code > 0 {
		c = strconv.Itoa(code)
	}
	m.requests.WithLabelValues(region, endpoint, method, c).Inc()
	m.duration.WithLabelValues(region, endpoint, method).Observe(d.Seconds())
}
