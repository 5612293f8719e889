// Package schema loads the Proxmox VE API schema (the api-viewer's apidata.js)
// and checks requests against it the way pve-http-server and PVE::JSONSchema
// do, so that a simulator built on it refuses what a real server refuses.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Schema is a loaded API tree, indexed for lookup by concrete request path.
type Schema struct {
	root      *node
	endpoints int
}

// node is one path segment of the API tree. Static children win over the
// variable child ("{name}"), as in PVE::RESTHandler.
type node struct {
	static   map[string]*node
	variable *node
	varName  string
	conflict bool
	template string
	methods  map[string]*Method
}

// Method is one API call: an HTTP method on a path template.
type Method struct {
	HTTPMethod string
	Path       string // template, e.g. /cluster/firewall/ipset/{name}
	Name       string
	Protected  bool
	ProxyTo    string
	AllowToken bool
	// AdditionalProperties allows parameters the schema does not define.
	AdditionalProperties bool
	Params               map[string]*Property
	Permissions          Permissions
}

// Permissions is the method's permission rule as the schema states it.
type Permissions struct {
	User  string // "all" when any authenticated user may call
	Check []any  // e.g. ["perm", "/vms/{vmid}", ["VM.Audit"], "any", 1]
}

// Property is one parameter's schema.
type Property struct {
	Type      string
	Optional  bool
	Pattern   string
	pattern   *regexp.Regexp
	MinLength *int
	MaxLength *int
	Minimum   *float64
	Maximum   *float64
	Enum      []string
	// Format names a registered format ("pve-node"); FormatProps holds the
	// sub-schema of a property-string format ("virtio=..,bridge=..").
	Format      string
	FormatProps map[string]*Property
	DefaultKey  bool
	Alias       string
	KeyAlias    string
}

// Load reads an apidata.js file.
func Load(path string) (*Schema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read API schema: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse API schema %s: %w", path, err)
	}
	return s, nil
}

// Parse parses the content of an apidata.js file: a JavaScript statement
// `const apiSchema = [...];` around a JSON tree.
func Parse(data []byte) (*Schema, error) {
	start := bytes.IndexByte(data, '[')
	end := bytes.LastIndexByte(data, ']')
	if start < 0 || end < start {
		return nil, errors.New("no JSON array found")
	}
	var tree []rawNode
	if err := json.Unmarshal(data[start:end+1], &tree); err != nil {
		return nil, err
	}
	s := &Schema{root: &node{}}
	if err := s.add(tree); err != nil {
		return nil, err
	}
	if s.endpoints == 0 {
		return nil, errors.New("schema defines no methods")
	}
	return s, nil
}

type rawNode struct {
	Path     string               `json:"path"`
	Children []rawNode            `json:"children"`
	Info     map[string]rawMethod `json:"info"`
}

type rawMethod struct {
	Method     string `json:"method"`
	Name       string `json:"name"`
	Protected  int    `json:"protected"`
	ProxyTo    string `json:"proxyto"`
	AllowToken int    `json:"allowtoken"`
	Parameters struct {
		AdditionalProperties *int                    `json:"additionalProperties"`
		Properties           map[string]*rawProperty `json:"properties"`
	} `json:"parameters"`
	Permissions struct {
		User  string `json:"user"`
		Check []any  `json:"check"`
	} `json:"permissions"`
}

type rawProperty struct {
	Type       any             `json:"type"`
	Optional   any             `json:"optional"`
	Pattern    string          `json:"pattern"`
	MinLength  any             `json:"minLength"`
	MaxLength  any             `json:"maxLength"`
	Minimum    any             `json:"minimum"`
	Maximum    any             `json:"maximum"`
	Enum       []any           `json:"enum"`
	Format     json.RawMessage `json:"format"`
	DefaultKey any             `json:"default_key"`
	Alias      string          `json:"alias"`
	KeyAlias   string          `json:"keyAlias"`
}

func (s *Schema) add(tree []rawNode) error {
	for _, rn := range tree {
		if len(rn.Info) > 0 {
			n := s.root.ensure(rn.Path)
			n.template = rn.Path
			if n.methods == nil {
				n.methods = map[string]*Method{}
			}
			for httpMethod, rm := range rn.Info {
				m, err := newMethod(httpMethod, rn.Path, rm)
				if err != nil {
					return fmt.Errorf("%s %s: %w", httpMethod, rn.Path, err)
				}
				n.methods[httpMethod] = m
				s.endpoints++
			}
		}
		if err := s.add(rn.Children); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) ensure(path string) *node {
	cur := n
	for _, seg := range splitPath(path) {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			if cur.variable == nil {
				cur.variable = &node{}
				cur.varName = seg[1 : len(seg)-1]
			} else if cur.varName != seg[1:len(seg)-1] {
				// Two templates disagree on a parameter's name at one
				// position; keep the first and let tests notice.
				cur.conflict = true
			}
			cur = cur.variable
			continue
		}
		if cur.static == nil {
			cur.static = map[string]*node{}
		}
		next := cur.static[seg]
		if next == nil {
			next = &node{}
			cur.static[seg] = next
		}
		cur = next
	}
	return cur
}

func newMethod(httpMethod, path string, rm rawMethod) (*Method, error) {
	m := &Method{
		HTTPMethod:           httpMethod,
		Path:                 path,
		Name:                 rm.Name,
		Protected:            rm.Protected != 0,
		ProxyTo:              rm.ProxyTo,
		AllowToken:           rm.AllowToken != 0,
		AdditionalProperties: rm.Parameters.AdditionalProperties != nil && *rm.Parameters.AdditionalProperties != 0,
		Params:               map[string]*Property{},
		Permissions:          Permissions{User: rm.Permissions.User, Check: rm.Permissions.Check},
	}
	for name, rp := range rm.Parameters.Properties {
		p, err := newProperty(rp)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", name, err)
		}
		m.Params[name] = p
	}
	return m, nil
}

var indexedParam = regexp.MustCompile(`^([a-z][a-z_-]*?)(\d+)$`)

// Param returns the schema of a parameter. The schema names indexed
// parameters once ("net[n]" stands for net0, net1, ...).
func (m *Method) Param(name string) *Property {
	if p := m.Params[name]; p != nil {
		return p
	}
	if g := indexedParam.FindStringSubmatch(name); g != nil {
		return m.Params[g[1]+"[n]"]
	}
	return nil
}

func newProperty(rp *rawProperty) (*Property, error) {
	p := &Property{
		Type:       "string",
		Optional:   truthy(rp.Optional),
		Pattern:    rp.Pattern,
		MinLength:  intPtr(rp.MinLength),
		MaxLength:  intPtr(rp.MaxLength),
		Minimum:    floatPtr(rp.Minimum),
		Maximum:    floatPtr(rp.Maximum),
		DefaultKey: truthy(rp.DefaultKey),
		Alias:      rp.Alias,
		KeyAlias:   rp.KeyAlias,
	}
	if t, ok := rp.Type.(string); ok {
		p.Type = t
	}
	for _, e := range rp.Enum {
		p.Enum = append(p.Enum, fmt.Sprint(e))
	}
	if rp.Pattern != "" {
		// Perl patterns are matched whole (m/^$pattern$/). A pattern RE2 cannot
		// compile is skipped rather than refusing everything.
		if re, err := regexp.Compile(`^(?:` + rp.Pattern + `)$`); err == nil {
			p.pattern = re
		}
	}
	if len(rp.Format) > 0 {
		var name string
		if err := json.Unmarshal(rp.Format, &name); err == nil {
			p.Format = name
		} else {
			var sub map[string]*rawProperty
			if err := json.Unmarshal(rp.Format, &sub); err != nil {
				return nil, fmt.Errorf("format: %w", err)
			}
			p.FormatProps = map[string]*Property{}
			for k, rs := range sub {
				sp, err := newProperty(rs)
				if err != nil {
					return nil, fmt.Errorf("format %s: %w", k, err)
				}
				p.FormatProps[k] = sp
			}
		}
	}
	return p, nil
}

// floatPtr reads a number the schema may write as a JSON number or string
// (some Perl schemas carry "maximum": "4094").
func floatPtr(v any) *float64 {
	var f float64
	switch t := v.(type) {
	case float64:
		f = t
	case string:
		var err error
		if f, err = strconv.ParseFloat(t, 64); err != nil {
			return nil
		}
	default:
		return nil
	}
	return &f
}

func intPtr(v any) *int {
	f := floatPtr(v)
	if f == nil {
		return nil
	}
	i := int(*f)
	return &i
}

func truthy(v any) bool {
	switch t := v.(type) {
	case float64:
		return t != 0
	case bool:
		return t
	case string:
		return t == "1" || t == "true"
	}
	return false
}

// Endpoints returns how many (method, path) pairs the schema defines.
func (s *Schema) Endpoints() int { return s.endpoints }

// ErrNotImplemented is returned by Lookup for a path or method the schema
// does not define; Proxmox answers 501 `Method 'GET /x' not implemented`.
var ErrNotImplemented = errors.New("not implemented")

// Lookup finds the method for a request. escapedPath is the path below
// /api2/json in its escaped form, so that a %2F inside a segment stays inside
// it. The returned map holds the unescaped path parameters. A final {cidr}
// segment takes the rest of the path, since CIDRs are often sent with a
// literal '/'.
func (s *Schema) Lookup(httpMethod, escapedPath string) (*Method, map[string]string, error) {
	segs := splitPath(escapedPath)
	params := map[string]string{}
	n := s.root
	for i := 0; i < len(segs); i++ {
		seg, err := url.PathUnescape(segs[i])
		if err != nil {
			return nil, nil, ErrNotImplemented
		}
		if next := n.static[seg]; next != nil {
			n = next
			continue
		}
		if n.variable == nil {
			return nil, nil, ErrNotImplemented
		}
		if n.varName == "cidr" && i < len(segs)-1 && n.variable.static == nil && n.variable.variable == nil {
			rest, err := url.PathUnescape(strings.Join(segs[i:], "/"))
			if err != nil {
				return nil, nil, ErrNotImplemented
			}
			seg, i = rest, len(segs)-1
		}
		params[n.varName] = seg
		n = n.variable
	}
	m := n.methods[httpMethod]
	if m == nil {
		return nil, nil, ErrNotImplemented
	}
	return m, params, nil
}

// Paths lists every path template, sorted; used by tests and diagnostics.
func (s *Schema) Paths() []string {
	var out []string
	var walk func(*node)
	walk = func(n *node) {
		if len(n.methods) > 0 {
			out = append(out, n.template)
		}
		for _, c := range n.static {
			walk(c)
		}
		if n.variable != nil {
			walk(n.variable)
		}
	}
	walk(s.root)
	sort.Strings(out)
	return out
}

// splitPath splits on '/' and drops empty fragments, as find_handler does.
func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
