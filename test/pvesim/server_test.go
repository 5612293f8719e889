package pvesim

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/provider/pve"
	"github.com/pvelb/pvelb/test/pvesim/schema"
)

func TestEnvelopeAndVersion(t *testing.T) {
	_, c := newSim(t, Options{})
	r := c.do("GET", "/version", nil).want(t, "200 OK")
	if r.CT != "application/json;charset=UTF-8" {
		t.Errorf("content type %q", r.CT)
	}
	var v struct{ Version, Release string }
	r.decode(t, &v)
	if v.Version != "9.1.3" || v.Release != "9.1" {
		t.Errorf("version %+v", v)
	}
	// Writes answer {"data":null}.
	w := c.do("POST", "/cluster/firewall/ipset", vals("name", "pvelb-vips")).want(t, "200 OK")
	if string(w.Data) != "null" {
		t.Errorf("write data %s, want null", w.Data)
	}
}

func TestAuth(t *testing.T) {
	ts, c := newSim(t, Options{})
	cases := []struct {
		name, header, status string
	}{
		{"valid", ts.AuthHeader(), "200 OK"},
		{"missing", "", "401 No ticket"},
		{"bearer", "Bearer abc", "401 No ticket"},
		{"wrong secret", "PVEAPIToken=" + ts.TokenID + "=00000000-0000-0000-0000-000000000000", "401 invalid token value!"},
		{"unknown token", "PVEAPIToken=pvelb@pve!other=" + ts.TokenSecret, "401 no such token 'other' for user 'pvelb@pve'"},
		{"malformed id", "PVEAPIToken=pvelb=" + ts.TokenSecret, "401 invalid API token format"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := *c
			cc.auth = tc.header
			r := cc.do("GET", "/version", nil).want(t, tc.status)
			if strings.Contains(r.Status+r.Message+string(r.Data), ts.TokenSecret) {
				t.Errorf("answer leaks the token secret: %q", r.Status)
			}
		})
	}
}

func TestSchemaRefusals(t *testing.T) {
	_, c := newSim(t, Options{})
	c.do("POST", "/cluster/firewall/ipset", vals("name", "vips")).want(t, "200 OK")
	cases := []struct {
		name, method, path string
		params             url.Values
		json               map[string]any
		status             string
		errs               map[string]string
	}{
		{name: "unknown parameter", method: "POST", path: "/cluster/firewall/ipset/vips",
			params: vals("cidr", "192.0.2.5", "foo", "1"), status: "400 Parameter verification failed.",
			errs: map[string]string{"foo": schema.MsgNotDefined}},
		{name: "missing cidr", method: "POST", path: "/cluster/firewall/ipset/vips",
			params: vals("comment", "x"), status: "400 Parameter verification failed.",
			errs: map[string]string{"cidr": schema.MsgMissing}},
		{name: "form boolean true", method: "POST", path: "/cluster/firewall/ipset/vips",
			params: vals("cidr", "192.0.2.5", "nomatch", "true"), status: "400 Parameter verification failed.",
			errs: map[string]string{"nomatch": "type check ('boolean') failed - got 'true'"}},
		{name: "json boolean true", method: "POST", path: "/cluster/firewall/ipset/vips",
			json: map[string]any{"cidr": "192.0.2.6", "nomatch": true}, status: "200 OK"},
		{name: "bad cidr", method: "POST", path: "/cluster/firewall/ipset/vips",
			params: vals("cidr", "192.0.2.256"), status: "400 Parameter verification failed.",
			errs: map[string]string{"cidr": "invalid format - value does not look like a valid IP address or CIDR network\n"}},
		{name: "bad set name", method: "POST", path: "/cluster/firewall/ipset",
			params: vals("name", "9vips"), status: "400 Parameter verification failed.",
			errs: map[string]string{"name": "value does not match the regex pattern"}},
		{name: "path vmid not integer", method: "GET", path: "/nodes/pve1/qemu/abc/firewall/ipset",
			status: "400 Parameter verification failed.", errs: map[string]string{"vmid": "type check ('integer') failed - got 'abc'"}},
		{name: "path vmid too small", method: "GET", path: "/nodes/pve1/qemu/99/firewall/options",
			status: "400 Parameter verification failed.", errs: map[string]string{"vmid": "value must have a minimum value of 100"}},
		{name: "path name pattern", method: "GET", path: "/cluster/firewall/ipset/-x",
			status: "400 Parameter verification failed.", errs: map[string]string{"name": "value does not match the regex pattern"}},
		{name: "parameter also in path", method: "GET", path: "/cluster/firewall/ipset/vips",
			params: vals("name", "other"), status: "400 Parameter verification failed.",
			errs: map[string]string{"name": "duplicate parameter (already defined in URI)"}},
		{name: "unknown path", method: "GET", path: "/x", status: "501 Method 'GET /x' not implemented"},
		{name: "unknown method", method: "PATCH", path: "/version", status: "501 Method 'PATCH /version' not implemented"},
		{name: "query on GET type enum", method: "GET", path: "/cluster/resources", params: vals("type", "vms"),
			status: "400 Parameter verification failed.",
			errs:   map[string]string{"type": "value 'vms' does not have a value in the enumeration 'vm', 'storage', 'node', 'sdn'"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r reply
			if tc.json != nil {
				r = c.doJSON(tc.method, tc.path, tc.json)
			} else {
				r = c.do(tc.method, tc.path, tc.params)
			}
			r.want(t, tc.status)
			if len(r.Errors) != len(tc.errs) {
				t.Fatalf("errors %v, want %v", r.Errors, tc.errs)
			}
			for k, v := range tc.errs {
				if r.Errors[k] != v {
					t.Errorf("errors[%s] = %q, want %q", k, r.Errors[k], v)
				}
			}
			if r.Code != 200 && r.Message == "" {
				t.Errorf("no message in error body")
			}
		})
	}
}

func TestBodyOnDeleteRefused(t *testing.T) {
	ts, c := newSim(t, Options{})
	ts.SeedIPSet(pve.ClusterScope, "vips")
	for _, method := range []string{"DELETE", "GET"} {
		req, _ := http.NewRequest(method, ts.URL+"/cluster/firewall/ipset/vips", strings.NewReader("force=1"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		c.send(req).want(t, "501 Unexpected content for method '"+method+"'")
	}
	if ts.IPSetEntries(pve.ClusterScope, "vips") == nil {
		t.Fatal("refused DELETE removed the set")
	}
}

func TestCustomReasonWithoutHijack(t *testing.T) {
	// An http.Handler user without a hijackable writer still gets the
	// status code and the message in the body.
	dir, err := schema.FindDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err) // CI has ../shared: a missing schema is a broken checkout
		}
		t.Skip(err)
	}
	s, err := New(Options{SchemaFile: filepath.Join(dir, schema.PVE9File), Tokens: []Token{{ID: "a@pve!bb", Secret: "s"}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest("GET", "/api2/json/cluster/firewall/ipset/nope", nil)
	req.Header.Set("Authorization", "PVEAPIToken=a@pve!bb=s")
	s.ServeHTTP(rec, req)
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"message":"no such IPSet 'nope'\n"`) || rec.Header().Get("X-Pvesim-Reason") != "no such IPSet 'nope'" {
		t.Fatalf("got %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	dir, err := schema.FindDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err) // CI has ../shared: a missing schema is a broken checkout
		}
		t.Skip(err)
	}
	file := filepath.Join(dir, schema.PVE9File)
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no tokens", Options{SchemaFile: file}, "tokens"},
		{"bad token id", Options{SchemaFile: file, Tokens: []Token{{ID: "root", Secret: "x"}}}, "tokens[0].id"},
		{"empty secret", Options{SchemaFile: file, Tokens: []Token{{ID: "a@pve!bb"}}}, "tokens[0].secret"},
		{"missing schema", Options{SchemaFile: "/nonexistent.js", Tokens: []Token{{ID: "a@pve!bb", Secret: "x"}}}, "schema"},
	}
	for _, tc := range cases {
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}
