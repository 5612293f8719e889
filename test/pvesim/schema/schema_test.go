package schema

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var loaded sync.Map // file name -> *Schema

func load(t *testing.T, file string) *Schema {
	t.Helper()
	if s, ok := loaded.Load(file); ok {
		return s.(*Schema)
	}
	dir, err := FindDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Proxmox API schema needed: %v", err)
		}
		t.Skipf("Proxmox API schema not found (%v); set PVELB_PVE_API_DIR", err)
	}
	s, err := Load(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	loaded.Store(file, s)
	return s
}

var schemaFiles = []string{PVE9File, PVE8File}

func TestParseRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "const x = 1;", "const apiSchema = [ {\"path\": ];", "[]"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

func TestLookup(t *testing.T) {
	cases := []struct {
		method, path string
		template     string // "" = not implemented
		params       map[string]string
	}{
		{"GET", "/version", "/version", map[string]string{}},
		{"GET", "/cluster/resources", "/cluster/resources", map[string]string{}},
		{"GET", "/nodes/pve1/qemu/100/config", "/nodes/{node}/qemu/{vmid}/config", map[string]string{"node": "pve1", "vmid": "100"}},
		{"GET", "//nodes//pve1/qemu/100/config/", "/nodes/{node}/qemu/{vmid}/config", map[string]string{"node": "pve1", "vmid": "100"}},
		{"DELETE", "/cluster/firewall/ipset/vips/192.0.2.0/24", "/cluster/firewall/ipset/{name}/{cidr}", map[string]string{"name": "vips", "cidr": "192.0.2.0/24"}},
		{"DELETE", "/cluster/firewall/ipset/vips/192.0.2.0%2F24", "/cluster/firewall/ipset/{name}/{cidr}", map[string]string{"name": "vips", "cidr": "192.0.2.0/24"}},
		{"PUT", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0/2001:db8::%2F64", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}", map[string]string{"node": "pve1", "vmid": "100", "name": "ipfilter-net0", "cidr": "2001:db8::/64"}},
		{"POST", "/cluster/firewall/ipset", "/cluster/firewall/ipset", map[string]string{}},
		{"PATCH", "/version", "", nil},
		{"GET", "/x", "", nil},
		{"GET", "/cluster/firewall/ipset/vips/192.0.2.0/24/extra", "/cluster/firewall/ipset/{name}/{cidr}", map[string]string{"name": "vips", "cidr": "192.0.2.0/24/extra"}},
		{"GET", "/nodes/pve1/qemu/100/nonexistent", "", nil},
	}
	for _, file := range schemaFiles {
		s := load(t, file)
		for _, c := range cases {
			t.Run(file+" "+c.method+" "+c.path, func(t *testing.T) {
				m, params, err := s.Lookup(c.method, c.path)
				if c.template == "" {
					if err != ErrNotImplemented {
						t.Fatalf("want ErrNotImplemented, got %v (%v)", err, m)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if m.Path != c.template || m.HTTPMethod != c.method {
					t.Fatalf("got %s %s, want %s %s", m.HTTPMethod, m.Path, c.method, c.template)
				}
				if len(params) != len(c.params) {
					t.Fatalf("params %v, want %v", params, c.params)
				}
				for k, v := range c.params {
					if params[k] != v {
						t.Errorf("param %s = %q, want %q", k, params[k], v)
					}
				}
			})
		}
	}
}

func TestNoParameterNameConflicts(t *testing.T) {
	for _, file := range schemaFiles {
		s := load(t, file)
		var walk func(n *node)
		walk = func(n *node) {
			if n.conflict {
				t.Errorf("%s: conflicting parameter names below %s", file, n.varName)
			}
			for _, c := range n.static {
				walk(c)
			}
			if n.variable != nil {
				walk(n.variable)
			}
		}
		walk(s.root)
		if s.Endpoints() < 500 || len(s.Paths()) < 300 {
			t.Errorf("%s: only %d endpoints on %d paths", file, s.Endpoints(), len(s.Paths()))
		}
	}
}

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestValidate(t *testing.T) {
	const (
		entry   = "/cluster/firewall/ipset/{name}"
		vmEntry = "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}"
		options = "/nodes/{node}/qemu/{vmid}/firewall/options"
		config  = "/nodes/{node}/qemu/{vmid}/config"
		ipsets  = "/cluster/firewall/ipset"
	)
	vm := func(extra map[string]any) map[string]any {
		p := map[string]any{"node": "pve1", "vmid": "100"}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	cases := []struct {
		name, method, path string
		params             map[string]any
		errs               map[string]string // param -> substring; nil = valid
		canon              map[string]string
	}{
		{"entry ok", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5/24"}, nil, nil},
		{"entry alias ok", "POST", entry, map[string]any{"name": "vips", "cidr": "dc/myalias"}, nil, nil},
		{"entry ipv6 ok", "POST", entry, map[string]any{"name": "vips", "cidr": "2001:db8::1"}, nil, nil},
		{"unknown param", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5", "foo": "1"},
			map[string]string{"foo": MsgNotDefined}, nil},
		{"missing cidr", "POST", entry, map[string]any{"name": "vips"}, map[string]string{"cidr": MsgMissing}, nil},
		{"bad cidr", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.300"},
			map[string]string{"cidr": "invalid format - value does not look like a valid IP address or CIDR network"}, nil},
		{"bad prefix length", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.0/33"},
			map[string]string{"cidr": "invalid format"}, nil},
		{"form boolean true refused", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5", "nomatch": "true"},
			map[string]string{"nomatch": "type check ('boolean') failed - got 'true'"}, nil},
		{"form boolean 1", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5", "nomatch": "1"}, nil,
			map[string]string{"nomatch": "1"}},
		{"json boolean true", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5", "nomatch": jsonValue(t, "true")}, nil,
			map[string]string{"nomatch": "1"}},
		{"json boolean false", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5", "nomatch": false}, nil,
			map[string]string{"nomatch": "0"}},
		{"json number 2 not boolean", "POST", entry, map[string]any{"name": "vips", "cidr": "192.0.2.5", "nomatch": jsonValue(t, "2")},
			map[string]string{"nomatch": "type check ('boolean')"}, nil},
		{"name pattern", "POST", entry, map[string]any{"name": "1vips", "cidr": "192.0.2.5"},
			map[string]string{"name": "value does not match the regex pattern"}, nil},
		{"name pattern anchored", "POST", entry, map[string]any{"name": "vips!", "cidr": "192.0.2.5"},
			map[string]string{"name": "value does not match the regex pattern"}, nil},
		{"name too short", "POST", ipsets, map[string]any{"name": "v"},
			map[string]string{"name": "value must be at least 2 characters long"}, nil},
		{"name too long", "POST", ipsets, map[string]any{"name": "v" + strings.Repeat("x", 64)},
			map[string]string{"name": "value may only be 64 characters long"}, nil},
		{"json array as string", "POST", ipsets, map[string]any{"name": []any{"a"}},
			map[string]string{"name": "type check ('string') failed - got 'ARRAY'"}, nil},
		{"json null is missing", "POST", ipsets, map[string]any{"name": nil},
			map[string]string{"name": MsgMissing}, nil},
		{"vmid not integer", "GET", vmEntry, map[string]any{"node": "pve1", "vmid": "abc", "name": "ipfilter-net0", "cidr": "192.0.2.1"},
			map[string]string{"vmid": "type check ('integer') failed - got 'abc'"}, nil},
		{"vmid too small", "GET", vmEntry, map[string]any{"node": "pve1", "vmid": "99", "name": "ipfilter-net0", "cidr": "192.0.2.1"},
			map[string]string{"vmid": "value must have a minimum value of 100"}, nil},
		{"vmid too big", "GET", vmEntry, map[string]any{"node": "pve1", "vmid": "1000000000", "name": "ipfilter-net0", "cidr": "192.0.2.1"},
			map[string]string{"vmid": "value must have a maximum value of 999999999"}, nil},
		{"json vmid number", "GET", vmEntry, map[string]any{"node": "pve1", "vmid": jsonValue(t, "100"), "name": "ipfilter-net0", "cidr": "192.0.2.1"},
			nil, map[string]string{"vmid": "100"}},
		{"node format", "GET", vmEntry, map[string]any{"node": "pve_1", "vmid": "100", "name": "ipfilter-net0", "cidr": "192.0.2.1"},
			map[string]string{"node": "value does not look like a valid node name"}, nil},
		{"options delete configid list", "PUT", options, vm(map[string]any{"delete": "ipfilter,enable"}), nil, nil},
		{"options delete bad id", "PUT", options, vm(map[string]any{"delete": "ip filter!"}),
			map[string]string{"delete": "invalid configuration ID"}, nil},
		{"options enum", "PUT", options, vm(map[string]any{"policy_in": "ALLOW"}),
			map[string]string{"policy_in": "does not have a value in the enumeration 'ACCEPT', 'REJECT', 'DROP'"}, nil},
		{"options several errors", "PUT", options, vm(map[string]any{"enable": "yes", "bogus": "1"}),
			map[string]string{"enable": "type check", "bogus": MsgNotDefined}, nil},
		{"config snapshot configid", "GET", config, vm(map[string]any{"snapshot": "-x"}),
			map[string]string{"snapshot": "invalid configuration ID"}, nil},
		{"config current", "GET", config, vm(map[string]any{"current": "1"}), nil, nil},
	}
	for _, file := range schemaFiles {
		s := load(t, file)
		for _, c := range cases {
			t.Run(file+" "+c.name, func(t *testing.T) {
				m, _, err := s.Lookup(c.method, strings.NewReplacer("{node}", "pve1", "{vmid}", "100", "{name}", "x", "{cidr}", "192.0.2.1").Replace(c.path))
				if err != nil {
					t.Fatalf("lookup %s %s: %v", c.method, c.path, err)
				}
				canon, errs := m.Validate(c.params)
				if c.errs == nil {
					if errs != nil {
						t.Fatalf("unexpected errors %v", errs)
					}
				} else {
					if len(errs) != len(c.errs) {
						t.Fatalf("errors %v, want keys of %v", errs, c.errs)
					}
					for k, want := range c.errs {
						if !strings.Contains(errs[k], want) {
							t.Errorf("error for %s = %q, want it to contain %q", k, errs[k], want)
						}
					}
				}
				for k, want := range c.canon {
					if canon[k] != want {
						t.Errorf("canonical %s = %q, want %q", k, canon[k], want)
					}
				}
			})
		}
	}
}

func TestPropertyString(t *testing.T) {
	s := load(t, PVE9File)
	m, _, err := s.Lookup("POST", "/nodes/pve1/qemu/100/config")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		value string
		ok    bool
	}{
		{"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1", true},
		{"virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=yes", false},
		{"virtio=BC:24:11:AA:BB:CC,bogus=1", false},
	}
	for _, c := range cases {
		_, errs := m.Validate(map[string]any{"node": "pve1", "vmid": "100", "net0": c.value})
		if (errs == nil) != c.ok {
			t.Errorf("net0=%q: errors %v, want ok=%v", c.value, errs, c.ok)
		}
	}
}
