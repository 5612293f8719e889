package pvesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pvelb/pvelb/test/pvesim/schema"
)

const apiPrefix = "/api2/json"

// Server is the simulator; it is an http.Handler serving /api2/json/...
type Server struct {
	schema           *schema.Schema
	opts             Options
	version, release string
	tokens           map[string]Token
	handlers         map[string]handlerFunc

	mu        sync.Mutex // guards everything below
	vms       map[int]*VM
	hosts     map[string]bool // hosts named by SetHostOnline; VMs' nodes count too
	offline   map[string]bool
	firewalls map[int]*firewall     // by VMID; 0 is the cluster firewall
	groups    map[string][]Rule     // cluster security groups
	locks     map[int]chan struct{} // cfs locks, by the same key
	outage    bool
	faults    []*Fault
	stats     Stats

	// lockHook, when set by a test, runs while a write holds its lock.
	lockHook func(key int)
}

// request is one validated API call.
type request struct {
	ctx      *http.Request
	method   *schema.Method
	params   map[string]string // validated, canonical
	token    Token
	path     string // concrete path below /api2/json
	template string
}

type handlerFunc func(*request) (any, error)

// apiError is a failure answered with Status and Message as reason phrase.
type apiError struct {
	Status  int
	Message string
	Errors  map[string]string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Message) }

func fail(status int, format string, args ...any) *apiError {
	return &apiError{Status: status, Message: fmt.Sprintf(format, args...)}
}

func paramError(errs map[string]string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: "Parameter verification failed.", Errors: errs}
}

func notImplemented(method, path string) *apiError {
	return fail(http.StatusNotImplemented, "Method '%s %s' not implemented", method, path)
}

const maxBody = 64 << 10 // pve-http-server's limit_max_post

// ServeHTTP runs the same steps, in the same order, as pveproxy: auth, body
// checks, method lookup, proxying to the VM's node, permissions, parameter
// verification, then the handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d := s.opts.Latency; d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	res, err := s.serve(r)
	if err != nil {
		ae, ok := err.(*apiError)
		if !ok {
			ae = fail(http.StatusInternalServerError, "%s", err.Error())
		}
		if ae.Status == http.StatusUnauthorized && s.opts.AuthFailureDelay > 0 {
			select {
			case <-time.After(s.opts.AuthFailureDelay):
			case <-r.Context().Done():
			}
		}
		writeError(w, ae)
		return
	}
	writeData(w, res)
}

func (s *Server) serve(r *http.Request) (any, error) {
	rawPath := r.URL.EscapedPath()
	s.mu.Lock()
	s.stats.Requests++
	outage := s.outage
	s.mu.Unlock()
	if outage {
		return nil, fail(http.StatusServiceUnavailable, "Service Unavailable")
	}
	if !strings.HasPrefix(rawPath, apiPrefix+"/") && rawPath != apiPrefix {
		return nil, fail(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, r.URL.Path)
	}
	escaped := strings.TrimPrefix(rawPath, apiPrefix)
	relPath, _ := url.PathUnescape(escaped)
	if relPath == "" {
		relPath = "/"
	}

	token, err := s.authenticate(r)
	if err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	m, pathParams, lerr := s.schema.Lookup(r.Method, escaped)
	key := r.Method + " " + relPath
	if lerr == nil {
		key = r.Method + " " + m.Path
	}
	s.mu.Lock()
	s.stats.ByPath[key]++
	s.mu.Unlock()
	if lerr != nil {
		return nil, notImplemented(r.Method, relPath)
	}
	if f := s.takeFault(r.Method, relPath); f != nil {
		return nil, f
	}
	h := s.handlers[r.Method+" "+m.Path]
	if h == nil {
		return nil, fail(http.StatusNotImplemented, "Method '%s %s' not implemented by pvesim", r.Method, relPath)
	}

	raw, err := requestParams(r, body, pathParams)
	if err != nil {
		return nil, err
	}
	if m.ProxyTo != "" {
		if err := s.proxyCheck(pathParams[m.ProxyTo]); err != nil {
			return nil, err
		}
	}
	strParams := map[string]string{}
	for k, v := range raw {
		if sv, ok := v.(string); ok {
			strParams[k] = sv
		}
	}
	if err := s.checkPermissions(token, m.Permissions, strParams); err != nil {
		return nil, err
	}
	params, errs := m.Validate(raw)
	if errs != nil {
		return nil, paramError(errs)
	}
	if r.Method != http.MethodGet {
		s.mu.Lock()
		s.stats.Writes++
		s.mu.Unlock()
	}
	return h(&request{ctx: r, method: m, params: params, token: token, path: relPath, template: m.Path})
}

// readBody reads a request body, refusing one on GET and DELETE as
// pve-http-server does (their parameters belong in the query string).
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fail(http.StatusBadRequest, "error reading request body: %v", err)
	}
	if len(body) > maxBody {
		return nil, fail(http.StatusRequestEntityTooLarge, "Request Entity Too Large")
	}
	if len(body) > 0 && (r.Method == http.MethodGet || r.Method == http.MethodDelete || r.Method == http.MethodHead) {
		return nil, fail(http.StatusNotImplemented, "Unexpected content for method '%s'", r.Method)
	}
	return body, nil
}

// requestParams merges path, query and body parameters. Form and query
// values are strings; a JSON body keeps its JSON types.
func requestParams(r *http.Request, body []byte, pathParams map[string]string) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range pathParams {
		out[k] = v
	}
	add := func(k string, v any) error {
		if _, dup := pathParams[k]; dup {
			return paramError(map[string]string{k: "duplicate parameter (already defined in URI)"})
		}
		out[k] = v
		return nil
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "unable to parse query string: %v", err)
	}
	for k, vs := range query {
		if err := add(k, strings.Join(vs, "\x00")); err != nil {
			return nil, err
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return out, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			return nil, fail(http.StatusBadRequest, "unable to parse JSON body: %v", err)
		}
		for k, v := range obj {
			if err := add(k, v); err != nil {
				return nil, err
			}
		}
	case "application/x-www-form-urlencoded", "":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fail(http.StatusBadRequest, "unable to parse form body: %v", err)
		}
		for k, vs := range form {
			if err := add(k, strings.Join(vs, "\x00")); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fail(http.StatusUnsupportedMediaType, "unsupported content type '%s'", ct)
	}
	return out, nil
}

// routes maps "METHOD /template" to the simulated handlers.
func (s *Server) routes() map[string]handlerFunc {
	h := map[string]handlerFunc{
		"GET /version":                                 s.getVersion,
		"GET /access/permissions":                      s.accessPermissions,
		"GET /cluster/resources":                       s.clusterResources,
		"GET /nodes":                                   s.listNodes,
		"GET /nodes/{node}/qemu":                       s.listNodeVMs,
		"GET /nodes/{node}/qemu/{vmid}/config":         s.vmConfig,
		"GET /nodes/{node}/qemu/{vmid}/status/current": s.vmStatus,
		"GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces": s.agentInterfaces,
		"GET /nodes/{node}/qemu/{vmid}/firewall/options":             s.getFirewallOptions,
		"PUT /nodes/{node}/qemu/{vmid}/firewall/options":             s.putFirewallOptions,
		"POST /nodes/{node}/qemu/{vmid}/migrate":                     s.migrateVM,
		"GET /nodes/{node}/qemu/{vmid}/firewall/rules":               s.vmRules,
		"GET /cluster/firewall/groups/{group}":                       s.groupRules,
		"GET /cluster/firewall/options":                              s.clusterOptions,
	}
	for _, prefix := range []string{"/cluster/firewall", "/nodes/{node}/qemu/{vmid}/firewall"} {
		h["GET "+prefix+"/ipset"] = s.listIPSets
		h["POST "+prefix+"/ipset"] = s.createIPSet
		h["DELETE "+prefix+"/ipset/{name}"] = s.deleteIPSet
		h["GET "+prefix+"/ipset/{name}"] = s.listEntries
		h["POST "+prefix+"/ipset/{name}"] = s.addEntry
		h["GET "+prefix+"/ipset/{name}/{cidr}"] = s.getEntry
		h["PUT "+prefix+"/ipset/{name}/{cidr}"] = s.updateEntry
		h["DELETE "+prefix+"/ipset/{name}/{cidr}"] = s.deleteEntry
	}
	return h
}

func (s *Server) getVersion(*request) (any, error) {
	return map[string]any{"version": s.version, "release": s.release, "repoid": "5ea0da3b", "console": "html5"}, nil
}
