package pve_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim"
)

// label is an endpoint's metrics label: its URL without /api2/json.
func label(url string) string { return strings.TrimSuffix(url, "/api2/json") }

// metricValue is the value of the series of name whose labels include
// want, or -1 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			if mt.GetGauge() != nil {
				return mt.GetGauge().GetValue()
			}
			return mt.GetCounter().GetValue()
		}
	}
	return -1
}

func endpointUp(t *testing.T, reg *prometheus.Registry, url string) float64 {
	t.Helper()
	return metricValue(t, reg, "pvelb_proxmox_api_endpoint_up", map[string]string{"region": "sim", "url": label(url)})
}

// TestSimFailoverBetweenEndpoints: a cluster reached through two Proxmox
// hosts keeps working, reads and writes, while the first is stopped; the
// stopped one is not asked again until its recheck, and is used again once
// it answers.
func TestSimFailoverBetweenEndpoints(t *testing.T) {
	ts, _ := newSim(t, pvesim.Options{}, nil)
	a, b := ts.AddEndpoint(t), ts.AddEndpoint(t)
	reg := prometheus.NewRegistry()
	c := newClient(t, ts, ts.TokenSecret, func(o *pve.Options) {
		o.URL, o.URLs, o.Metrics = a.URL, []string{b.URL}, pve.NewMetrics(reg)
		// Retries would hide a failover that does not happen.
		o.MaxRetries = -1
	})
	attempts := func(url, result string) float64 {
		v := metricValue(t, reg, "pvelb_proxmox_api_endpoint_attempts_total", map[string]string{"region": "sim", "url": label(url), "result": result})
		return max(v, 0)
	}
	ctx := context.Background()

	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := attempts(a.URL, "answered"); got != 1 {
		t.Fatalf("first endpoint answered %v requests; want 1 (it is preferred)", got)
	}

	a.Stop()
	for i := 0; i < 3; i++ {
		start := time.Now()
		vms, err := c.ClusterVMs(ctx)
		if err != nil || len(vms) != 2 {
			t.Fatalf("with the first endpoint stopped: %d VMs, %v; want both VMs from the second", len(vms), err)
		}
		t.Logf("request %d with the first endpoint stopped: %v", i, time.Since(start).Round(100*time.Microsecond))
	}
	if err := c.AddIPSetEntry(ctx, pve.ClusterScope, "pvelb-vips", pve.IPSetEntry{CIDR: "192.0.2.80"}); err != nil &&
		!pve.IsNotFound(err) {
		t.Fatalf("write with the first endpoint stopped: %v", err)
	}
	if got := attempts(a.URL, "unreachable"); got != 1 {
		t.Fatalf("stopped endpoint asked %v times; want 1 (then skipped until its recheck)", got)
	}
	if got := endpointUp(t, reg, a.URL); got != 0 {
		t.Fatalf("pvelb_proxmox_api_endpoint_up for the stopped endpoint = %v; want 0", got)
	}
	if got := endpointUp(t, reg, b.URL); got != 1 {
		t.Fatalf("pvelb_proxmox_api_endpoint_up for the serving endpoint = %v; want 1", got)
	}
	h := pve.Endpoints(c)
	if len(h) != 2 || h[0].Up || !h[1].Up || h[0].Failures != 1 {
		t.Fatalf("Endpoints = %+v; want the first down after 1 failure, the second up", h)
	}

	// Both gone: a transient NetworkError naming an endpoint, never an
	// answer such as "does not exist".
	b.Stop()
	_, err := c.VMConfig(ctx, cp1)
	var ne *pve.NetworkError
	if !errors.As(err, &ne) || !pve.IsTransient(err) || pve.IsNotFound(err) {
		t.Fatalf("every endpoint stopped: %T %v; want a transient NetworkError", err, err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:") {
		t.Fatalf("error %q does not name the endpoint", err)
	}

	// The first comes back: the next requests find it, and it is preferred
	// again over the second once both answer.
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatalf("first endpoint restarted: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	before := attempts(a.URL, "answered")
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := attempts(a.URL, "answered"); got != before+1 {
		t.Fatalf("after both came back the first endpoint answered %v more; want 1", got-before)
	}
	if got := endpointUp(t, reg, a.URL); got != 1 {
		t.Fatalf("pvelb_proxmox_api_endpoint_up for the restarted endpoint = %v; want 1", got)
	}
}

// TestSimFailoverOnHungEndpoint: an endpoint that accepts connections and
// never answers costs one request timeout, once, not one per request.
func TestSimFailoverOnHungEndpoint(t *testing.T) {
	ts, _ := newSim(t, pvesim.Options{}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = conn.Close() }) // held open, never answered
		}
	}()
	hung := "https://" + ln.Addr().String() + "/api2/json"
	c := newClient(t, ts, ts.TokenSecret, func(o *pve.Options) {
		o.URL, o.URLs, o.Timeout, o.MaxRetries = hung, []string{ts.URL}, 300*time.Millisecond, -1
	})
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 5; i++ {
		if _, err := c.ClusterVMs(ctx); err != nil {
			t.Fatalf("request %d with a hung first endpoint: %v", i, err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("5 requests took %v; the hung endpoint was waited on more than once", d)
	}
	t.Logf("5 requests with a hung first endpoint (timeout 300ms): %v", time.Since(start).Round(time.Millisecond))
}

// TestNewRejectsBadURLs: every URL is checked, and one given twice is refused.
func TestNewRejectsBadURLs(t *testing.T) {
	base := pve.Options{Region: "r", TokenID: "pvelb@pve!ccm", TokenSecret: "s"}
	for _, tc := range []struct {
		url  string
		urls []string
		want string
	}{
		{"", nil, "url: must not be empty"},
		{"https://a:8006", []string{""}, "urls[0]: must not be empty"},
		{"https://a:8006", []string{"ftp://b"}, "urls[0]:"},
		{"https://a:8006", []string{"https://a:8006/api2/json"}, "listed twice"},
		{"", []string{"https://a:8006", "https://a:8006/"}, "listed twice"},
	} {
		o := base
		o.URL, o.URLs = tc.url, tc.urls
		_, err := pve.New(o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("URL %q URLs %q: err = %v; want it to contain %q", tc.url, tc.urls, err, tc.want)
		}
	}
	o := base
	o.URLs = []string{"https://a:8006", "https://b:8006"}
	if _, err := pve.New(o); err != nil {
		t.Errorf("urls only: %v", err)
	}
}
