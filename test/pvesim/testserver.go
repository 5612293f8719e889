package pvesim

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServer is a Server listening with TLS on 127.0.0.1.
type TestServer struct {
	*Server
	URL         string // https://127.0.0.1:PORT/api2/json
	CAFile      string // PEM of the CA that signed the server certificate
	TokenID     string // the first token's ID
	TokenSecret string
	HTTP        *httptest.Server
	caPEM       []byte
	cert        tls.Certificate
}

// DefaultTokenID is the token NewTestServer creates when opts.Tokens is empty.
const DefaultTokenID = "pvelb@pve!ccm"

// NewTestServer starts a simulator on 127.0.0.1 with a fresh CA, closed by
// t.Cleanup. Without opts.Tokens it creates DefaultTokenID with a random
// secret and all privileges. Without opts.SchemaFile it uses
// DefaultSchemaFile, and skips the test when that is missing (fails it when
// $CI is set).
func NewTestServer(t testing.TB, opts Options) *TestServer {
	t.Helper()
	if opts.SchemaFile == "" {
		f, err := DefaultSchemaFile()
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("pvesim: Proxmox API schema needed in CI: %v", err)
			}
			t.Skipf("pvesim: Proxmox API schema not found, skipping (%v)", err)
		}
		opts.SchemaFile = f
	}
	if len(opts.Tokens) == 0 {
		secret := make([]byte, 16)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		s := hex.EncodeToString(secret)
		opts.Tokens = []Token{{ID: DefaultTokenID, Secret: s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]}}
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("pvesim: %v", err)
	}
	cert, caPEM, err := SelfSignedTLS("127.0.0.1", "localhost")
	if err != nil {
		t.Fatalf("pvesim: %v", err)
	}
	caFile := filepath.Join(t.TempDir(), "pvesim-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatalf("pvesim: %v", err)
	}
	hs := httptest.NewUnstartedServer(srv)
	// HTTP/1.1 only: custom reason phrases need a hijackable connection.
	hs.EnableHTTP2 = false
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	hs.Config.ReadHeaderTimeout = 10 * time.Second
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return &TestServer{
		Server:      srv,
		URL:         hs.URL + apiPrefix,
		CAFile:      caFile,
		TokenID:     opts.Tokens[0].ID,
		TokenSecret: opts.Tokens[0].Secret,
		HTTP:        hs,
		caPEM:       caPEM,
		cert:        cert,
	}
}

// Endpoint is one more Proxmox host's API for the TestServer's cluster: every
// Proxmox host serves the whole cluster's API, so it answers from the same
// state, with a certificate from the same CA. Stop makes the host go away
// (connections are refused) and Start brings it back on the same address.
type Endpoint struct {
	URL string // https://127.0.0.1:PORT/api2/json

	ts   *TestServer
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

// AddEndpoint starts another endpoint of the simulated cluster, stopped by
// t.Cleanup.
func (ts *TestServer) AddEndpoint(t testing.TB) *Endpoint {
	t.Helper()
	e := &Endpoint{ts: ts, addr: "127.0.0.1:0"}
	if err := e.Start(); err != nil {
		t.Fatalf("pvesim: %v", err)
	}
	e.URL = "https://" + e.addr + apiPrefix
	t.Cleanup(e.Stop)
	return e
}

// Start serves the endpoint (again) on its address; it is a no-op while it
// serves.
func (e *Endpoint) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		return err
	}
	e.addr = ln.Addr().String()
	srv := &http.Server{
		Handler:           e.ts.Server,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only, as NewTestServer.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{e.ts.cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
	}
	e.srv = srv
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return nil
}

// Stop closes the listener and every connection: the host is gone.
func (e *Endpoint) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		_ = e.srv.Close()
		e.srv = nil
	}
}

// Client returns an HTTP client that trusts the server's CA (and nothing
// else), with a bounded timeout.
func (ts *TestServer) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.caPEM)
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
}

// AuthHeader is the Authorization header value for the test server's token.
func (ts *TestServer) AuthHeader() string {
	return "PVEAPIToken=" + ts.TokenID + "=" + ts.TokenSecret
}

// Migrate live-migrates a VM through the API, as `qm migrate VMID TARGET
// --online` does: POST /nodes/{from}/qemu/{vmid}/migrate with the test
// server's token. It returns the API's error message on failure.
func (ts *TestServer) Migrate(vmid int, from, target string) error {
	form := url.Values{"target": {target}, "online": {"1"}}
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/nodes/%s/qemu/%d/migrate", ts.URL, url.PathEscape(from), vmid),
		strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", ts.AuthHeader())
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := ts.Client().Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("migrate VM %d from %s to %s: %s", vmid, from, target, res.Status)
	}
	return nil
}
