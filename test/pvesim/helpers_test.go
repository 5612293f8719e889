package pvesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
)

// reply is a decoded API answer.
type reply struct {
	Code    int
	Status  string // e.g. "500 no such IPSet 'x'"
	CT      string
	Data    json.RawMessage
	Errors  map[string]string
	Message string
}

type caller struct {
	t    testing.TB
	ts   *TestServer
	c    *http.Client
	auth string
}

func newCaller(t testing.TB, ts *TestServer) *caller {
	return &caller{t: t, ts: ts, c: ts.Client(), auth: ts.AuthHeader()}
}

func (c *caller) withToken(id, secret string) *caller {
	cc := *c
	cc.auth = "PVEAPIToken=" + id + "=" + secret
	return &cc
}

// do sends params in the query for GET/DELETE and as a form body otherwise.
func (c *caller) do(method, path string, params url.Values) reply {
	c.t.Helper()
	u := c.ts.URL + path
	var body io.Reader
	if method == http.MethodGet || method == http.MethodDelete {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else if params != nil {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return c.send(req)
}

// doJSON sends a JSON body, as go-proxmox does.
func (c *caller) doJSON(method, path string, body any) reply {
	c.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(method, c.ts.URL+path, bytes.NewReader(b))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.send(req)
}

func (c *caller) send(req *http.Request) reply {
	c.t.Helper()
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		// Errorf, not Fatalf: send also runs on goroutines of concurrency tests.
		c.t.Errorf("%s %s: %v", req.Method, req.URL, err)
		return reply{Code: -1, Status: "transport error: " + err.Error()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Code: resp.StatusCode, Status: resp.Status, CT: resp.Header.Get("Content-Type")}
	var env struct {
		Data    json.RawMessage   `json:"data"`
		Errors  map[string]string `json:"errors"`
		Message string            `json:"message"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &env); err != nil {
			c.t.Errorf("%s %s: body %q is not JSON: %v", req.Method, req.URL, raw, err)
		}
	}
	r.Data, r.Errors, r.Message = env.Data, env.Errors, env.Message
	return r
}

func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode %s: %v", r.Data, err)
	}
}

func (r reply) want(t testing.TB, status string) reply {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %q, want %q (errors %v, message %q)", r.Status, status, r.Errors, r.Message)
	}
	return r
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func testVMs() []VM {
	return []VM{
		{VMID: 100, Node: "pve1", Name: "talos-cp-1", UUID: "5f7c2a3e-1111-4a2b-9c3d-000000000100", SKU: "talos-cp",
			Cores: 2, Sockets: 1, MemoryMiB: 4096,
			Nets: map[int]string{0: "virtio=BC:24:11:AA:BB:01,bridge=vmbr0,firewall=1"}, Tags: "k8s;talos",
			Agent: []AgentIface{{Name: "eth0", MAC: "BC:24:11:AA:BB:01", Addrs: []netip.Prefix{
				netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("2001:db8::10/64")}}}},
		{VMID: 101, Node: "pve2", Name: "talos-w-1", UUID: "5f7c2a3e-1111-4a2b-9c3d-000000000101", Cores: 4, Sockets: 2, MemoryMiB: 8192,
			Nets: map[int]string{0: "virtio=BC:24:11:AA:BB:02,bridge=vmbr0,firewall=1,tag=20"}, Status: "stopped"},
		{VMID: 102, Node: "pve2", Name: "template", Template: true, Status: "stopped"},
	}
}

func newSim(t testing.TB, opts Options) (*TestServer, *caller) {
	t.Helper()
	ts := NewTestServer(t, opts)
	for _, vm := range testVMs() {
		if err := ts.AddVM(vm); err != nil {
			t.Fatal(err)
		}
	}
	return ts, newCaller(t, ts)
}

func vmScope(vmid int) pve.Scope { return pve.VMScope(pve.VMRef{Node: "pve1", VMID: vmid}) }

func clusterSc() pve.Scope { return pve.ClusterScope }

func ipEntryFor(i int) pve.IPSetEntry {
	return pve.IPSetEntry{CIDR: fmt.Sprintf("2001:db8::%x", i+1), Comment: "seed"}
}
