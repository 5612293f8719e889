package pve

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2"
)

const (
	testTokenID = "pvelb@pve!ccm"
	testSecret  = "5e1f3c2a-9d7b-4c1e-8f00-secret0000042"
)

// writeRaw answers with a Proxmox-style status line (a custom reason phrase,
// which net/http's ResponseWriter cannot produce) by writing to the hijacked
// connection.
func writeRaw(t testing.TB, w http.ResponseWriter, status int, reason, body string) {
	t.Helper()
	hj, ok := w.(http.Hijacker)
	if !ok {
		t.Errorf("response writer cannot hijack")
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, reason, len(body), body)
	_ = buf.Flush()
}

func writeData(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
}

// writeCAFile stores the test server's certificate as a PEM CA bundle.
func writeCAFile(t testing.TB, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newTestClient starts a TLS server with h and a client that trusts it.
func newTestClient(t testing.TB, h http.HandlerFunc, mutate func(*Options)) (*client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	opts := Options{
		Region: "test", URL: srv.URL + "/api2/json", TokenID: testTokenID, TokenSecret: testSecret,
		CAFile: writeCAFile(t, srv), Timeout: 5 * time.Second, RetryBackoff: time.Millisecond,
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := newClient(opts)
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	return c, srv
}

var vm100 = VMRef{Node: "pve1", VMID: 100}

func TestNewValidatesOptions(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	valid := func() Options {
		return Options{Region: "east", URL: "https://pve.example.com:8006/api2/json", TokenID: testTokenID, TokenSecret: testSecret}
	}
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{name: "valid"},
		{name: "url without path", mutate: func(o *Options) { o.URL = "https://pve.example.com:8006" }},
		{name: "http with insecure", mutate: func(o *Options) { o.URL = "http://127.0.0.1:8006/api2/json"; o.InsecureSkipVerify = true }},
		{name: "no region", mutate: func(o *Options) { o.Region = "" }, wantErr: "region"},
		{name: "no url", mutate: func(o *Options) { o.URL = "" }, wantErr: "url: must not be empty"},
		{name: "http", mutate: func(o *Options) { o.URL = "http://pve.example.com/api2/json" }, wantErr: "must be an https URL (http is only allowed"},
		{name: "ftp", mutate: func(o *Options) { o.URL = "ftp://pve.example.com/api2/json" }, wantErr: "https URL"},
		{name: "no host", mutate: func(o *Options) { o.URL = "https:///api2/json" }, wantErr: "must name a host"},
		{name: "wrong path", mutate: func(o *Options) { o.URL = "https://pve.example.com/api2/extjs" }, wantErr: "/api2/json"},
		{name: "query", mutate: func(o *Options) { o.URL = "https://pve.example.com/api2/json?x=1" }, wantErr: "query"},
		{name: "userinfo", mutate: func(o *Options) { o.URL = "https://root:" + testSecret + "@pve.example.com/api2/json" }, wantErr: "credentials"},
		{name: "token id", mutate: func(o *Options) { o.TokenID = "pvelb@pve" }, wantErr: "tokenID"},
		{name: "no secret", mutate: func(o *Options) { o.TokenSecret = "" }, wantErr: "tokenSecret: must not be empty"},
		{name: "secret with newline", mutate: func(o *Options) { o.TokenSecret = testSecret + "\n" }, wantErr: "tokenSecret"},
		{name: "negative timeout", mutate: func(o *Options) { o.Timeout = -time.Second }, wantErr: "timeout"},
		{name: "too many retries", mutate: func(o *Options) { o.MaxRetries = 11 }, wantErr: "maxRetries"},
		{name: "backoff too long", mutate: func(o *Options) { o.RetryBackoff = time.Minute }, wantErr: "retryBackoff"},
		{name: "missing ca file", mutate: func(o *Options) { o.CAFile = filepath.Join(dir, "nope.pem") }, wantErr: "nope.pem"},
		{name: "invalid ca file", mutate: func(o *Options) { o.CAFile = garbage }, wantErr: "garbage.pem\": holds no PEM certificate"},
		{name: "ca and insecure", mutate: func(o *Options) { o.CAFile = garbage; o.InsecureSkipVerify = true }, wantErr: "insecureSkipVerify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			if tt.mutate != nil {
				tt.mutate(&o)
			}
			c, err := New(o)
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New = %v, %v; want a client", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New err = %v; want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Fatalf("error leaks the token secret: %v", err)
			}
		})
	}
}

func TestTLSVerification(t *testing.T) {
	var hits atomic.Int32
	h := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeData(w, []any{})
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(h))
	defer srv.Close()
	base := Options{Region: "test", URL: srv.URL + "/api2/json", TokenID: testTokenID, TokenSecret: testSecret, MaxRetries: 3, RetryBackoff: time.Millisecond}

	// System roots do not know the test server's certificate.
	c, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ClusterVMs(context.Background())
	var ne *NetworkError
	if !errors.As(err, &ne) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without CAFile: err = %v; want a certificate verification failure", err)
	}
	if IsTransient(err) {
		t.Fatalf("a refused certificate must not count as transient: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("handler reached %d times without a trusted certificate", n)
	}

	withCA := base
	withCA.CAFile = writeCAFile(t, srv)
	c, err = New(withCA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClusterVMs(context.Background()); err != nil {
		t.Fatalf("with CAFile: %v", err)
	}

	insecure := base
	insecure.InsecureSkipVerify = true
	c, err = New(insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClusterVMs(context.Background()); err != nil {
		t.Fatalf("with insecureSkipVerify: %v", err)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("handler reached %d times; want 2", n)
	}
}

func TestAuthHeaderAndRequestShape(t *testing.T) {
	type seen struct {
		method, requestURI, rawQuery, contentType, auth string
		body                                            []byte
	}
	var (
		mu   sync.Mutex
		reqs []seen
	)
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, seen{r.Method, r.RequestURI, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), b})
		mu.Unlock()
		writeData(w, nil)
	}, nil)
	ctx := context.Background()
	scope := VMScope(vm100)

	if err := c.DeleteIPSetEntry(ctx, scope, "ipfilter-net0", "192.0.2.0/24", "0123abcd"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteIPSetEntry(ctx, ClusterScope, "pvelb-vips", "192.0.2.5/32", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteIPSetEntry(ctx, ClusterScope, "pvelb-vips", "2001:db8::/64", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.AddIPSetEntry(ctx, ClusterScope, "pvelb-vips", IPSetEntry{CIDR: "192.0.2.7/32", Comment: "pvelb", NoMatch: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateIPSet(ctx, scope, "ipfilter-net1", ""); err != nil {
		t.Fatal(err)
	}

	if len(reqs) != 5 {
		t.Fatalf("server saw %d requests; want 5", len(reqs))
	}
	for _, r := range reqs {
		if r.auth != "PVEAPIToken="+testTokenID+"="+testSecret {
			t.Errorf("%s %s: Authorization = %q", r.method, r.requestURI, r.auth)
		}
	}
	d := reqs[0]
	if d.method != http.MethodDelete || d.requestURI != "/api2/json/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0/192.0.2.0%2F24?digest=0123abcd" {
		t.Errorf("delete: %s %s", d.method, d.requestURI)
	}
	if len(d.body) != 0 || d.contentType != "" {
		t.Errorf("delete carried a body (%q, %q); Proxmox refuses that", d.body, d.contentType)
	}
	if got := reqs[1].requestURI; got != "/api2/json/cluster/firewall/ipset/pvelb-vips/192.0.2.5" {
		t.Errorf("delete of a /32 went to %s; want the normalised address", got)
	}
	if got := reqs[2].requestURI; got != "/api2/json/cluster/firewall/ipset/pvelb-vips/2001:db8::%2F64" {
		t.Errorf("IPv6 delete went to %s", got)
	}
	add := reqs[3]
	var body map[string]any
	if err := json.Unmarshal(add.body, &body); err != nil {
		t.Fatalf("add body %q: %v", add.body, err)
	}
	if add.method != http.MethodPost || add.requestURI != "/api2/json/cluster/firewall/ipset/pvelb-vips" ||
		body["cidr"] != "192.0.2.7" || body["comment"] != "pvelb" || body["nomatch"] != float64(1) {
		t.Errorf("add: %s %s %s", add.method, add.requestURI, add.body)
	}
	create := reqs[4]
	body = nil
	_ = json.Unmarshal(create.body, &body)
	if create.requestURI != "/api2/json/nodes/pve1/qemu/100/firewall/ipset" || body["name"] != "ipfilter-net1" || len(body) != 1 {
		t.Errorf("create: %s %s", create.requestURI, create.body)
	}
}

func TestInputValidationBeforeAnyRequest(t *testing.T) {
	var hits atomic.Int32
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1); writeData(w, nil) }, nil)
	ctx := context.Background()
	checks := []struct {
		name string
		err  error
		want string
	}{
		{"uppercase set", c.CreateIPSet(ctx, ClusterScope, "VIPs", ""), "ipset name"},
		{"bad cidr add", c.AddIPSetEntry(ctx, ClusterScope, "vips", IPSetEntry{CIDR: "192.0.2.300"}), "cidr"},
		{"/0 add", c.AddIPSetEntry(ctx, ClusterScope, "vips", IPSetEntry{CIDR: "0.0.0.0/0"}), "/0"},
		{"bad cidr delete", c.DeleteIPSetEntry(ctx, ClusterScope, "vips", "x", ""), "cidr"},
		{"bad vmid", func() error { _, err := c.VMConfig(ctx, VMRef{Node: "pve1", VMID: 7}); return err }(), "vm id"},
		{"bad node", func() error { _, err := c.IPSets(ctx, VMScope(VMRef{Node: "../x", VMID: 100})); return err }(), "node"},
	}
	for _, ck := range checks {
		if ck.err == nil || !strings.Contains(ck.err.Error(), ck.want) {
			t.Errorf("%s: err = %v; want one containing %q", ck.name, ck.err, ck.want)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("invalid input reached the server %d times", n)
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		reason    string
		body      string
		check     func(error) bool
		wantInErr string
		attempts  int32 // with MaxRetries 2
	}{
		{name: "400 param", status: 400, reason: "Parameter verification failed.",
			body:  `{"data":null,"errors":{"cidr":"address '192.0.2.5' already exists"}}`,
			check: IsAlreadyExists, wantInErr: "already exists", attempts: 1},
		{name: "401", status: 401, reason: "No ticket", check: IsAuth, wantInErr: "401 No ticket", attempts: 1},
		{name: "403", status: 403, reason: "Permission check failed (/vms/100, VM.Config.Network)", check: IsAuth, wantInErr: "VM.Config.Network", attempts: 1},
		{name: "500 no such ipset", status: 500, reason: "no such IPSet 'vips'", check: IsNotFound, wantInErr: "no such IPSet", attempts: 1},
		{name: "500 digest", status: 500, reason: "detected modified configuration - file changed by other user? Try again.", check: IsConflict, attempts: 1},
		{name: "500 lock", status: 500, reason: "cfs-lock 'firewall-vm-100' error: got lock request timeout", check: IsTransient, attempts: 3},
		{name: "500 message body only", status: 500, reason: "Internal Server Error", body: `{"data":null,"message":"no such IPSet 'vips'\n"}`, check: IsNotFound, attempts: 1},
		{name: "501", status: 501, reason: "Method 'GET /x' not implemented", check: func(err error) bool { pe, ok := asError(err); return ok && pe.StatusCode == 501 }, attempts: 1},
		// go-proxmox would decode this body as success.
		{name: "595 with data body", status: 595, reason: "Connection refused", body: `{"data":null}`, check: IsTransient, attempts: 3},
		{name: "503", status: 503, reason: "Service Unavailable", check: IsTransient, attempts: 3},
		{name: "302", status: 302, reason: "Found", check: func(err error) bool { pe, ok := asError(err); return ok && pe.StatusCode == 302 }, attempts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var attempts atomic.Int32
			c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				attempts.Add(1)
				if tt.status == 302 {
					w.Header().Set("Location", "https://192.0.2.1/")
				}
				writeRaw(t, w, tt.status, tt.reason, tt.body)
			}, func(o *Options) { o.MaxRetries = 2 })
			_, err := c.IPSetEntries(context.Background(), ClusterScope, "vips")
			if err == nil {
				t.Fatal("want an error")
			}
			pe, ok := asError(err)
			if !ok {
				t.Fatalf("err %T %v is not *pve.Error", err, err)
			}
			if pe.StatusCode != tt.status || pe.Method != "GET" || pe.Path != "/cluster/firewall/ipset/vips" {
				t.Fatalf("err = %+v", pe)
			}
			if !tt.check(err) {
				t.Fatalf("classification failed for %v", err)
			}
			if tt.wantInErr != "" && !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("err %q lacks %q", err, tt.wantInErr)
			}
			if n := attempts.Load(); n != tt.attempts {
				t.Fatalf("server saw %d attempts; want %d", n, tt.attempts)
			}
		})
	}
}

func TestRetriesTransientThenSucceeds(t *testing.T) {
	var attempts atomic.Int32
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		switch attempts.Add(1) {
		case 1:
			writeRaw(t, w, 500, "cfs-lock 'firewall-cluster' error: got lock request timeout", "")
		case 2:
			writeRaw(t, w, 596, "Broken pipe", "")
		default:
			writeData(w, []map[string]any{{"name": "pvelb-vips", "digest": "d"}})
		}
	}, func(o *Options) { o.MaxRetries = 5 })
	sets, err := c.IPSets(context.Background(), ClusterScope)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || sets[0].Name != "pvelb-vips" {
		t.Fatalf("sets = %+v", sets)
	}
	if n := attempts.Load(); n != 3 {
		t.Fatalf("attempts = %d; want 3", n)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		var attempts atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			writeRaw(t, w, 503, "Service Unavailable", "")
		}, func(o *Options) { o.MaxRetries = 4 })
		_, err := c.ClusterVMs(context.Background())
		if !IsTransient(err) {
			t.Fatalf("err = %v; want transient", err)
		}
		if n := attempts.Load(); n != 5 {
			t.Fatalf("attempts = %d; want 1 + 4 retries", n)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		var attempts atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			writeRaw(t, w, 503, "Service Unavailable", "")
		}, func(o *Options) { o.MaxRetries = -1 })
		if _, err := c.ClusterVMs(context.Background()); !IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
		if n := attempts.Load(); n != 1 {
			t.Fatalf("attempts = %d; want 1", n)
		}
	})
	t.Run("time budget", func(t *testing.T) {
		var attempts atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			writeRaw(t, w, 503, "Service Unavailable", "")
		}, func(o *Options) { o.MaxRetries = 10; o.RetryBackoff = 40 * time.Millisecond })
		c.retry.budget = 100 * time.Millisecond
		start := time.Now()
		_, err := c.ClusterVMs(context.Background())
		if !IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("took %v; the retry budget is 100ms", el)
		}
		if n := attempts.Load(); n < 2 || n > 4 {
			t.Fatalf("attempts = %d; want a few, cut by the 100ms budget", n)
		}
	})
	t.Run("context cancel", func(t *testing.T) {
		var attempts atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			writeRaw(t, w, 503, "Service Unavailable", "")
		}, func(o *Options) { o.MaxRetries = 10; o.RetryBackoff = 2 * time.Second })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.ClusterVMs(ctx)
		if el := time.Since(start); el > time.Second {
			t.Fatalf("took %v after the context ended", el)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !IsTransient(err) {
			t.Fatalf("err = %v; want both the context error and the last transient failure", err)
		}
		if n := attempts.Load(); n != 1 {
			t.Fatalf("attempts = %d; want 1", n)
		}
	})
}

func TestPerRequestTimeoutIsRetried(t *testing.T) {
	var attempts atomic.Int32
	release := make(chan struct{})
	defer close(release)
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if attempts.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		writeData(w, map[string]any{"status": "running", "qmpstatus": "running", "name": "cp-1", "uptime": "42"})
	}, func(o *Options) { o.Timeout = 100 * time.Millisecond })
	st, err := c.VMStatus(context.Background(), vm100)
	if err != nil {
		t.Fatal(err)
	}
	if *st != (VMStatus{Status: "running", QMPStatus: "running", Name: "cp-1", Uptime: 42}) {
		t.Fatalf("status = %+v", st)
	}
	if n := attempts.Load(); n != 2 {
		t.Fatalf("attempts = %d; want 2", n)
	}
}

func TestNetworkErrorIsTransientAndRetried(t *testing.T) {
	c, srv := newTestClient(t, func(w http.ResponseWriter, r *http.Request) { writeData(w, nil) }, func(o *Options) { o.MaxRetries = 2 })
	srv.Close()
	_, err := c.VMConfig(context.Background(), vm100)
	var ne *NetworkError
	if !errors.As(err, &ne) || !IsTransient(err) {
		t.Fatalf("err = %T %v; want a transient NetworkError", err, err)
	}
	if ne.Path != "/nodes/pve1/qemu/100/config" || ne.Method != "GET" {
		t.Fatalf("err = %+v", ne)
	}
}

func TestAddIPSetEntryDuplicate(t *testing.T) {
	dup := `{"data":null,"errors":{"cidr":"address '192.0.2.5' already exists"}}`
	t.Run("first attempt surfaces", func(t *testing.T) {
		var attempts atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			writeRaw(t, w, 400, "Parameter verification failed.", dup)
		}, nil)
		err := c.AddIPSetEntry(context.Background(), ClusterScope, "vips", IPSetEntry{CIDR: "192.0.2.5"})
		if !IsAlreadyExists(err) {
			t.Fatalf("err = %v; want IsAlreadyExists", err)
		}
		if n := attempts.Load(); n != 1 {
			t.Fatalf("attempts = %d", n)
		}
	})
	t.Run("after a retry it is success", func(t *testing.T) {
		var attempts atomic.Int32
		c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			if attempts.Add(1) == 1 {
				// The write happened but the proxy lost the answer.
				writeRaw(t, w, 596, "Connection timed out", "")
				return
			}
			writeRaw(t, w, 400, "Parameter verification failed.", dup)
		}, nil)
		if err := c.AddIPSetEntry(context.Background(), ClusterScope, "vips", IPSetEntry{CIDR: "192.0.2.5"}); err != nil {
			t.Fatalf("err = %v; want success", err)
		}
		if n := attempts.Load(); n != 2 {
			t.Fatalf("attempts = %d", n)
		}
	})
}

func TestSecretNeverInErrorsOrLogs(t *testing.T) {
	var logs strings.Builder
	var logMu sync.Mutex
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "6")
	_ = fs.Set("logtostderr", "false")
	klog.SetOutput(writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(p) }))
	defer func() { _ = fs.Set("v", "0"); _ = fs.Set("logtostderr", "true"); klog.SetOutput(os.Stderr) }()

	// A hostile or broken proxy that echoes the Authorization header into
	// the reason phrase, the errors map and the message.
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		switch {
		case strings.HasSuffix(r.URL.Path, "/xa"):
			writeRaw(t, w, 401, "bad token "+auth, "")
		case strings.HasSuffix(r.URL.Path, "/xb"):
			writeRaw(t, w, 400, "Parameter verification failed.", fmt.Sprintf(`{"errors":{"cidr":%q}}`, auth))
		case strings.HasSuffix(r.URL.Path, "/xc"):
			writeRaw(t, w, 500, "Internal Server Error", fmt.Sprintf(`{"message":%q}`, auth))
		default:
			writeRaw(t, w, 503, "proxy "+auth, "")
		}
	}, nil)
	ctx := context.Background()
	var errs []error
	for _, name := range []string{"xa", "xb", "xc", "xd"} {
		_, err := c.IPSetEntries(ctx, ClusterScope, name)
		errs = append(errs, err)
	}

	// Transport failures.
	closed, srv := newTestClient(t, nil, func(o *Options) { o.MaxRetries = 1 })
	srv.Close()
	_, err := closed.ClusterVMs(ctx)
	errs = append(errs, err)
	untrusted, err := New(Options{Region: "x", URL: c.pool.eps[0].url, TokenID: testTokenID, TokenSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	_, err = untrusted.ClusterVMs(ctx)
	errs = append(errs, err)

	for i, err := range errs {
		if err == nil {
			t.Fatalf("case %d: want an error", i)
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Fatalf("case %d: error leaks the secret: %v", i, err)
		}
		if pe, ok := asError(err); ok {
			for k, v := range pe.Errors {
				if strings.Contains(v, testSecret) {
					t.Fatalf("case %d: Errors[%s] leaks the secret", i, k)
				}
			}
		}
	}
	if pe, ok := asError(errs[0]); !ok || pe.StatusCode != 401 || !strings.Contains(pe.Reason, "<redacted>") {
		t.Fatalf("the echoed reason should show a redaction mark: %v", errs[0])
	}
	klog.Flush()
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "Retrying Proxmox request") {
		t.Fatalf("expected retry log lines at -v=6, got %q", logs.String())
	}
	if strings.Contains(logs.String(), testSecret) {
		t.Fatalf("logs leak the secret:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	if again := NewMetrics(reg); again.requests != m.requests || again.duration != m.duration {
		t.Fatal("NewMetrics on the same registry should reuse the registered collectors")
	}
	var attempts atomic.Int32
	c, srv := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if attempts.Add(1) == 1 {
			writeRaw(t, w, 503, "Service Unavailable", "")
			return
		}
		writeData(w, nil)
	}, func(o *Options) { o.Metrics = m; o.Region = "east" })
	ctx := context.Background()
	if err := c.DeleteIPSetEntry(ctx, VMScope(vm100), "ipfilter-net0", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteIPSetEntry(ctx, VMScope(VMRef{Node: "pve2", VMID: 101}), "ipfilter-net0", "192.0.2.0/24", ""); err != nil {
		t.Fatal(err)
	}
	const ep = "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}"
	if got := testutil.ToFloat64(m.requests.WithLabelValues("east", ep, "DELETE", "503")); got != 1 {
		t.Errorf("503 count = %v; want 1", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("east", ep, "DELETE", "200")); got != 2 {
		t.Errorf("200 count = %v; want 2 (two VMs, one template)", got)
	}
	srv.Close()
	c.retry.maxRetries = 0
	if _, err := c.VMStatus(ctx, vm100); err == nil {
		t.Fatal("want an error from a closed server")
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("east", "/nodes/{node}/qemu/{vmid}/status/current", "GET", "error")); got != 1 {
		t.Errorf("transport error count = %v; want 1", got)
	}
	// Cardinality stays bounded: one series per template, not per VM or cidr.
	if n := testutil.CollectAndCount(m.requests); n != 3 {
		t.Errorf("request series = %d; want 3", n)
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("duration series = %d; want 2", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["pvelb_proxmox_requests_total"] || !names["pvelb_proxmox_request_duration_seconds"] {
		t.Errorf("registry exports %v", names)
	}
}

// TestDownEndpointRecheckedInBackground: while another endpoint serves, a
// down one is rechecked by a background GET /version once its recheck time
// has come (5s, then 10s, ...), and is preferred again when it answers.
func TestDownEndpointRecheckedInBackground(t *testing.T) {
	var down atomic.Bool
	var firstHits, versionHits atomic.Int32
	serve := func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/version"):
			writeData(w, map[string]any{"version": "9.1.3"})
		default:
			writeData(w, []any{})
		}
	}
	first := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			// Drop the connection without an answer, as a host going away.
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
				}
			}
			return
		}
		firstHits.Add(1)
		if strings.HasSuffix(r.URL.Path, "/version") {
			versionHits.Add(1)
		}
		serve(w, r)
	}))
	t.Cleanup(first.Close)
	c, _ := newTestClient(t, serve, func(o *Options) {
		o.URLs = []string{o.URL}
		o.URL = first.URL + "/api2/json"
		o.MaxRetries = -1
	})
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	c.pool.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()
	health := func() EndpointHealth { return Endpoints(c)[0] }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; first endpoint %+v", what, health())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	down.Store(true)
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatal(err)
	}
	if h := health(); h.Up || h.Failures != 1 {
		t.Fatalf("after no answer: %+v; want down, 1 failure", h)
	}
	// Still down at its recheck: the probe fails and the wait doubles.
	advance(endpointRecheck)
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor("a failed recheck", func() bool { return health().Failures == 2 })

	down.Store(false)
	advance(endpointRecheck) // 5s of the 10s wait
	for i := 0; i < 3; i++ {
		if _, err := c.ClusterVMs(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := firstHits.Load(); n != 0 {
		t.Fatalf("first endpoint asked %d times before its recheck was due", n)
	}
	advance(endpointRecheck)
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor("the recheck to bring the endpoint back", func() bool { return health().Up })
	if v := versionHits.Load(); v != 1 {
		t.Fatalf("recheck sent %d GET /version; want 1", v)
	}
	if _, err := c.ClusterVMs(ctx); err != nil {
		t.Fatal(err)
	}
	if n := firstHits.Load(); n != 2 {
		t.Fatalf("first endpoint answered %d requests; want the recheck and the request after it", n)
	}
}
