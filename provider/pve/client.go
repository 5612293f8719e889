package pve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
	"k8s.io/klog/v2"
)

// Options configure a Client for one Proxmox VE cluster.
type Options struct {
	// Region names the cluster in metrics and logs.
	Region string
	// URL is the API base, https://host:8006/api2/json.
	URL string
	// URLs are more API bases of the same cluster (any Proxmox host serves
	// its whole API), tried after URL in this order when one does not
	// answer. See pool for the failover rules.
	URLs []string
	// TokenID is USER@REALM!TOKENID.
	TokenID string
	// TokenSecret is the token's secret. It never appears in errors or logs.
	TokenSecret string
	// CAFile is a PEM bundle of CAs that sign the server's certificate. Empty:
	// the system roots.
	CAFile string
	// InsecureSkipVerify turns TLS verification off (lab use only). It also
	// allows an http:// URL.
	InsecureSkipVerify bool
	// Timeout bounds each HTTP attempt. 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxRetries is how many times a transient failure is retried.
	// 0 means DefaultMaxRetries; a negative value turns retries off.
	MaxRetries int
	// RetryBackoff is the first retry delay; it doubles per retry up to
	// maxRetryBackoff. 0 means DefaultRetryBackoff.
	RetryBackoff time.Duration
	// Metrics receives request counts and durations; nil records nothing.
	Metrics *Metrics
}

const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxRetries   = 3
	DefaultRetryBackoff = 250 * time.Millisecond

	maxMaxRetries   = 10
	maxRetryBackoff = 5 * time.Second
	// retryBudget bounds the time one call spends retrying, whatever the
	// number of retries left.
	retryBudget = 30 * time.Second
)

type client struct {
	pool    *pool
	region  string
	timeout time.Duration
	retry   retryPolicy
	metrics *Metrics
	secret  string
}

var _ Client = (*client)(nil)

// New validates opts and returns a Client. It makes no request.
func New(opts Options) (Client, error) {
	return newClient(opts)
}

func newClient(opts Options) (*client, error) {
	if strings.TrimSpace(opts.Region) == "" {
		return nil, errors.New("region: must not be empty")
	}
	var bases []string
	for i, u := range append([]string{opts.URL}, opts.URLs...) {
		if i == 0 && u == "" && len(opts.URLs) > 0 {
			continue
		}
		field := "url"
		if i > 0 {
			field = fmt.Sprintf("urls[%d]", i-1)
		}
		if u == "" {
			return nil, fmt.Errorf("%s: must not be empty", field)
		}
		base, err := NormalizeURL(u, opts.InsecureSkipVerify)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if slices.Contains(bases, base) {
			return nil, fmt.Errorf("%s: %s is listed twice", field, base)
		}
		bases = append(bases, base)
	}
	if !ValidTokenID(opts.TokenID) {
		return nil, fmt.Errorf("tokenID %q: must look like USER@REALM!TOKENID", opts.TokenID)
	}
	if opts.TokenSecret == "" {
		return nil, errors.New("tokenSecret: must not be empty")
	}
	if strings.IndexFunc(opts.TokenSecret, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, errors.New("tokenSecret: must not contain whitespace or control characters")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("timeout %v: must not be negative", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	switch {
	case opts.MaxRetries > maxMaxRetries:
		return nil, fmt.Errorf("maxRetries %d: must be at most %d", opts.MaxRetries, maxMaxRetries)
	case opts.MaxRetries == 0:
		opts.MaxRetries = DefaultMaxRetries
	case opts.MaxRetries < 0:
		opts.MaxRetries = 0
	}
	if opts.RetryBackoff < 0 || opts.RetryBackoff > maxRetryBackoff {
		return nil, fmt.Errorf("retryBackoff %v: must be between 0 and %v", opts.RetryBackoff, maxRetryBackoff)
	}
	if opts.RetryBackoff == 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	tlsConfig, err := TLSConfig(opts.CAFile, opts.InsecureSkipVerify)
	if err != nil {
		return nil, err
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	transport.MaxIdleConnsPerHost = 8
	httpClient := &http.Client{
		Transport: &statusRecorder{base: transport},
		// Proxmox does not redirect API calls; following one could carry the
		// token elsewhere. A 3xx becomes an *Error instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c := &client{
		region:  opts.Region,
		timeout: opts.Timeout,
		retry: retryPolicy{
			maxRetries: opts.MaxRetries,
			initial:    opts.RetryBackoff,
			max:        maxRetryBackoff,
			budget:     retryBudget,
		},
		metrics: opts.Metrics,
		secret:  opts.TokenSecret,
	}
	eps := make([]*endpoint, 0, len(bases))
	for _, base := range bases {
		eps = append(eps, &endpoint{
			url:   base,
			label: endpointLabel(base),
			api: proxmox.NewClient(base,
				proxmox.WithHTTPClient(httpClient),
				proxmox.WithAPIToken(opts.TokenID, opts.TokenSecret),
				proxmox.WithUserAgent("pvelb"),
				proxmox.WithLogger(&klogLogger{redact: c.redact}),
			),
		})
	}
	c.pool = newPool(opts.Region, eps, opts.Metrics)
	if len(eps) > 1 {
		c.pool.probe = c.probe
	}
	return c, nil
}

// probe asks a down endpoint for the version, once, and records the outcome.
func (c *client) probe(ep *endpoint) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	_, err := c.once(ctx, ep, call{method: http.MethodGet, endpoint: epVersion, path: epVersion})
	c.pool.probed(ep, err)
}

// Endpoints reports the health of a client's API endpoints, in configuration
// order; nil for a Client that is not pvelb's own.
func Endpoints(c Client) []EndpointHealth {
	if cl, ok := c.(*client); ok {
		return cl.pool.health()
	}
	return nil
}

// call is one logical API call (retries included).
type call struct {
	method   string
	endpoint string // path template, the metrics label
	path     string // escaped path below the API base
	query    url.Values
	body     map[string]any
	// duplicateOKOnRetry makes an "already exists" answer to a retry a
	// success: the attempt that failed in transit did the work.
	duplicateOKOnRetry bool
}

func (c *client) do(ctx context.Context, cl call) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.retry.run(ctx, cl, func(attempt int) error {
		raw, tries, err := c.attempt(ctx, cl)
		if err != nil && (attempt > 0 || tries > 1) && cl.duplicateOKOnRetry && IsAlreadyExists(err) {
			klog.FromContext(ctx).V(2).Info("Proxmox retry found the object already created by an earlier attempt",
				"region", c.region, "method", cl.method, "endpoint", cl.endpoint)
			return nil
		}
		out = raw
		return err
	})
	return out, err
}

// attempt sends the call to the endpoints in the pool's order until one
// answers; tries is how many were asked.
func (c *client) attempt(ctx context.Context, cl call) (raw json.RawMessage, tries int, err error) {
	for _, ep := range c.pool.order() {
		tries++
		raw, err = c.once(ctx, ep, cl)
		if !c.pool.report(ctx, ep, err) {
			return raw, tries, err
		}
	}
	return nil, tries, err
}

// once makes one HTTP attempt on one endpoint under the per-request timeout.
func (c *client) once(ctx context.Context, ep *endpoint, cl call) (json.RawMessage, error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ex := &exchange{}
	actx = withExchange(actx, ex)

	p := cl.path
	if len(cl.query) > 0 {
		p += "?" + cl.query.Encode()
	}
	var data []byte
	if cl.body != nil {
		var err error
		if data, err = json.Marshal(cl.body); err != nil {
			return nil, fmt.Errorf("proxmox %s %s: encode body: %v", cl.method, cl.path, err)
		}
	}

	var raw json.RawMessage
	start := time.Now()
	err := ep.api.Req(actx, cl.method, p, data, &raw)
	answered, status, reason, body := ex.result()
	code := 0
	if answered {
		code = status
	}
	c.metrics.observe(c.region, cl.endpoint, cl.method, code, time.Since(start))

	if answered && (status < 200 || status > 299) {
		return nil, c.apiError(cl, status, reason, body)
	}
	if err != nil {
		if !answered {
			var uerr *url.Error
			if errors.As(err, &uerr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return nil, &NetworkError{Method: cl.method, Path: cl.path, Endpoint: ep.label, msg: c.redact(describeNetErr(err)), err: err}
			}
		}
		return nil, fmt.Errorf("proxmox %s %s: %s", cl.method, cl.path, c.redact(err.Error()))
	}
	return raw, nil
}

// apiError turns a non-2xx answer into *Error.
func (c *client) apiError(cl call, status int, reason string, body []byte) *Error {
	e := &Error{Method: cl.method, Path: cl.path, StatusCode: status, Reason: c.redact(reason)}
	var b struct {
		Errors  map[string]json.RawMessage `json:"errors"`
		Message string                     `json:"message"`
	}
	if len(body) > 0 && json.Unmarshal(body, &b) == nil {
		if len(b.Errors) > 0 {
			e.Errors = make(map[string]string, len(b.Errors))
			for k, v := range b.Errors {
				var s string
				if json.Unmarshal(v, &s) != nil {
					s = string(v)
				}
				e.Errors[k] = c.redact(strings.TrimSpace(s))
			}
		}
		msg := strings.TrimSpace(b.Message)
		if msg != "" && (e.Reason == "" || e.Reason == http.StatusText(status)) {
			e.Reason = c.redact(msg)
		}
	}
	return e
}

func (c *client) redact(s string) string {
	if c.secret == "" {
		return s
	}
	return strings.ReplaceAll(s, c.secret, "<redacted>")
}

// NetworkError is a Proxmox request that got no HTTP answer: connection
// refused, TLS failure, timeout. IsTransient is true for it unless the server's
// certificate was refused (retrying cannot fix that) or the caller cancelled.
type NetworkError struct {
	Method string
	Path   string
	// Endpoint is the API endpoint that did not answer (scheme://host:port).
	Endpoint string
	msg      string // redacted
	err      error
}

func (e *NetworkError) Error() string {
	return fmt.Sprintf("proxmox %s %s (%s): %s", e.Method, e.Path, e.Endpoint, e.msg)
}

func (e *NetworkError) Unwrap() error { return e.err }

// Transient reports whether trying again may succeed.
func (e *NetworkError) Transient() bool {
	if errors.Is(e.err, context.Canceled) {
		return false
	}
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
		rerr tls.RecordHeaderError
	)
	return !errors.As(e.err, &verr) && !errors.As(e.err, &uerr) && !errors.As(e.err, &herr) &&
		!errors.As(e.err, &cerr) && !errors.As(e.err, &rerr)
}

// describeNetErr drops the *url.Error wrapper, whose message repeats the full
// URL (the path is already in NetworkError).
func describeNetErr(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if uerr.Timeout() {
			return "timeout: " + uerr.Err.Error()
		}
		return uerr.Err.Error()
	}
	return err.Error()
}

// klogLogger routes go-proxmox's own logging into klog. Its debug output
// carries request and response bodies, so it is dropped.
type klogLogger struct{ redact func(string) string }

func (l *klogLogger) Debugf(string, ...any) {}
func (l *klogLogger) Infof(format string, v ...any) {
	klog.V(4).InfoS("go-proxmox", "msg", l.redact(fmt.Sprintf(format, v...)))
}
func (l *klogLogger) Warnf(format string, v ...any) {
	klog.InfoS("go-proxmox warning", "msg", l.redact(fmt.Sprintf(format, v...)))
}
func (l *klogLogger) Errorf(format string, v ...any) {
	klog.ErrorS(nil, "go-proxmox", "msg", l.redact(fmt.Sprintf(format, v...)))
}
