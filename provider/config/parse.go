package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/labels"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/provider/pve"
)

// The raw* types mirror the file. Leaves are `any` so a wrong type becomes a
// field-path error from this package instead of a decoder error that stops at
// the first problem; the structs still exist so the strict decoder reports
// every unknown key with its full path.
type rawConfig struct {
	Clusters     []rawCluster     `json:"clusters"`
	Instances    *rawInstances    `json:"instances"`
	Firewall     *rawFirewall     `json:"firewall"`
	LoadBalancer *rawLoadBalancer `json:"loadBalancer"`
}

type rawCluster struct {
	Region             any `json:"region"`
	URL                any `json:"url"`
	URLs               any `json:"urls"`
	TokenID            any `json:"tokenID"`
	TokenSecret        any `json:"tokenSecret"`
	TokenSecretFile    any `json:"tokenSecretFile"`
	CAFile             any `json:"caFile"`
	InsecureSkipVerify any `json:"insecureSkipVerify"`
	Timeout            any `json:"timeout"`
}

type rawInstances struct {
	Addresses       any `json:"addresses"`
	CacheTTL        any `json:"cacheTTL"`
	LabelSyncPeriod any `json:"labelSyncPeriod"`

	ApproveKubeletServingCertificates any `json:"approveKubeletServingCertificates"`
}

type rawFirewall struct {
	Enabled        any               `json:"enabled"`
	ClusterIPSet   any               `json:"clusterIPSet"`
	NICs           any               `json:"nics"`
	AdmitRanges    any               `json:"admitRanges"`
	ResyncPeriod   any               `json:"resyncPeriod"`
	ExtraAddresses []rawExtraAddress `json:"extraAddresses"`
}

type rawExtraAddress struct {
	Name         any `json:"name"`
	Addresses    any `json:"addresses"`
	NodeSelector any `json:"nodeSelector"`
}

type rawLoadBalancer struct {
	ServeClasslessServices any `json:"serveClasslessServices"`
}

// Load reads and parses the cloud config at path. Relative file paths inside
// it (tokenSecretFile, caFile) are resolved against the file's directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cloud config: %w", err)
	}
	return Parse(data, filepath.Dir(path))
}

// Parse parses a cloud config. baseDir is where relative tokenSecretFile and
// caFile paths are resolved; "" means the process's working directory. The
// error, when not nil, joins every problem found (errors.Join), each naming
// its field path.
func Parse(data []byte, baseDir string) (*Config, error) {
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		if e := unreadable(data); e != nil {
			return nil, e
		}
		// Syntax errors and duplicate keys: the YAML library names the line.
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	var tree any
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(jsonData, &tree); err != nil {
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	v := &validator{baseDir: baseDir}
	tree = v.checkShape(tree)
	if len(v.errs) > 0 && tree == nil {
		return nil, errors.Join(v.errs...)
	}
	cleaned, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	var raw rawConfig
	strictErrs, err := sigsjson.UnmarshalStrict(cleaned, &raw)
	if err != nil {
		// Cannot happen after checkShape; report rather than panic.
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	for _, se := range strictErrs {
		v.addStrict(se)
	}
	cfg := v.build(&raw)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return cfg, nil
}

// unreadable finds the first character the YAML reader refuses (invalid
// UTF-8, or one outside YAML's printable set, such as DEL or a C1 control)
// and says where it is. The reader's own error names neither the line nor the
// character, so an invisible one pasted into the file could not be found.
// It is only consulted after the YAML library refused the document.
func unreadable(data []byte) error {
	if bytes.HasPrefix(data, []byte{0xfe, 0xff}) || bytes.HasPrefix(data, []byte{0xff, 0xfe}) {
		return nil // UTF-16, which the YAML library decodes itself
	}
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return fmt.Errorf("cloud config: line %d, column %d: invalid UTF-8", line, col)
		case r == '\n':
			line, col = line+1, 0
		case r == '\t' || r == '\r' || r == 0x85 || r >= 0x20 && r <= 0x7e ||
			r >= 0xa0 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd || r >= 0x10000:
		default:
			return fmt.Errorf("cloud config: line %d, column %d: character %U is not allowed in YAML", line, col, r)
		}
		i += n
		col++
	}
	return nil
}

type validator struct {
	baseDir string
	errs    []error
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (v *validator) addStrict(err error) {
	var fe sigsjson.FieldError
	if errors.As(err, &fe) {
		msg := err.Error()
		kind := "invalid field"
		switch {
		case strings.HasPrefix(msg, "unknown field"):
			kind = "unknown field"
		case strings.HasPrefix(msg, "duplicate field"):
			kind = "duplicate field"
		}
		v.add(fe.FieldPath(), "%s", kind)
		return
	}
	v.errs = append(v.errs, err)
}

// checkShape verifies the containers (document, sections, cluster list and
// its items) have the right JSON kind, reporting and dropping those that do
// not, so the typed decode afterwards cannot fail on them. It returns nil when
// the document itself is unusable.
func (v *validator) checkShape(tree any) any {
	if tree == nil {
		return map[string]any{}
	}
	top, ok := tree.(map[string]any)
	if !ok {
		v.errs = append(v.errs, fmt.Errorf("cloud config: must be a mapping, got %s", kindOf(tree)))
		return nil
	}
	for _, section := range []string{"instances", "firewall", "loadBalancer"} {
		if val, present := top[section]; present && val != nil {
			if _, ok := val.(map[string]any); !ok {
				v.add(section, "must be a mapping, got %s", kindOf(val))
				delete(top, section)
			}
		}
	}
	if fw, ok := top["firewall"].(map[string]any); ok {
		if val, present := fw["extraAddresses"]; present && val != nil {
			list, ok := val.([]any)
			if !ok {
				v.add("firewall.extraAddresses", "must be a list of {name, addresses, nodeSelector}, got %s", kindOf(val))
				delete(fw, "extraAddresses")
			}
			for i, item := range list {
				if _, ok := item.(map[string]any); !ok {
					v.add(fmt.Sprintf("firewall.extraAddresses[%d]", i), "must be a mapping with name, addresses and nodeSelector, got %s", kindOf(item))
					list[i] = map[string]any{}
				}
			}
		}
	}
	if val, present := top["clusters"]; present && val != nil {
		list, ok := val.([]any)
		if !ok {
			v.add("clusters", "must be a list, got %s", kindOf(val))
			delete(top, "clusters")
			return top
		}
		for i, item := range list {
			if _, ok := item.(map[string]any); !ok {
				v.add(fmt.Sprintf("clusters[%d]", i), "must be a mapping, got %s", kindOf(item))
				list[i] = map[string]any{}
			}
		}
	}
	return top
}

func kindOf(val any) string {
	switch val.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, float64, json.Number:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", val)
}

var (
	// regionRE: a DNS label, because the region is a label value and part of
	// the providerID (so no "/").
	regionRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

func (v *validator) build(raw *rawConfig) *Config {
	cfg := &Config{}
	if len(raw.Clusters) == 0 {
		v.add("clusters", "at least one cluster is required")
	}
	seen := map[string]int{}
	for i := range raw.Clusters {
		c := v.cluster(fmt.Sprintf("clusters[%d]", i), &raw.Clusters[i])
		if c.Region != "" {
			if first, dup := seen[c.Region]; dup {
				v.add(fmt.Sprintf("clusters[%d].region", i), "duplicate region %q (also clusters[%d])", c.Region, first)
			} else {
				seen[c.Region] = i
			}
		}
		cfg.Clusters = append(cfg.Clusters, c)
	}

	ri := raw.Instances
	if ri == nil {
		ri = &rawInstances{}
	}
	mode := v.str("instances.addresses", ri.Addresses)
	switch AddressMode(mode) {
	case "":
		cfg.Instances.Addresses = AddressesProvided
	case AddressesProvided, AddressesProvidedAndAgent:
		cfg.Instances.Addresses = AddressMode(mode)
	default:
		v.add("instances.addresses", "must be %q or %q, got %q", AddressesProvided, AddressesProvidedAndAgent, mode)
	}
	cfg.Instances.CacheTTL = v.duration("instances.cacheTTL", ri.CacheTTL, DefaultCacheTTL, 0, time.Hour)
	cfg.Instances.LabelSyncPeriod = v.duration("instances.labelSyncPeriod", ri.LabelSyncPeriod, DefaultLabelSyncPeriod, 0, time.Hour)
	cfg.Instances.ApproveKubeletServingCertificates = v.boolean("instances.approveKubeletServingCertificates", ri.ApproveKubeletServingCertificates, false)
	if p := cfg.Instances.LabelSyncPeriod; p > 0 && p < time.Second {
		v.add("instances.labelSyncPeriod", "%s is too short: at least 1s, or 0 to turn it off", p)
	}

	rf := raw.Firewall
	if rf == nil {
		rf = &rawFirewall{}
	}
	cfg.Firewall.Enabled = v.boolean("firewall.enabled", rf.Enabled, true)
	cfg.Firewall.ClusterIPSet = v.str("firewall.clusterIPSet", rf.ClusterIPSet)
	if rf.ClusterIPSet == nil {
		cfg.Firewall.ClusterIPSet = DefaultClusterIPSet
	} else if n := cfg.Firewall.ClusterIPSet; pve.ValidateIPSetName(n) != nil {
		v.add("firewall.clusterIPSet", "%q is not a valid IPSet name: lowercase letter first, then lowercase letters, digits, '-' or '_', 2 to 64 characters", n)
	}
	cfg.Firewall.NICs = v.nics("firewall.nics", rf.NICs)
	cfg.Firewall.AdmitRanges = v.boolean("firewall.admitRanges", rf.AdmitRanges, false)
	cfg.Firewall.ResyncPeriod = v.duration("firewall.resyncPeriod", rf.ResyncPeriod, DefaultResyncPeriod, time.Second, 24*time.Hour)
	cfg.Firewall.ExtraAddresses = v.extraAddresses("firewall.extraAddresses", rf.ExtraAddresses)

	rl := raw.LoadBalancer
	if rl == nil {
		rl = &rawLoadBalancer{}
	}
	cfg.LoadBalancer.ServeClasslessServices = v.boolean("loadBalancer.serveClasslessServices", rl.ServeClasslessServices, true)
	return cfg
}

func (v *validator) cluster(path string, rc *rawCluster) Cluster {
	var c Cluster

	c.Region = v.str(path+".region", rc.Region)
	switch {
	case rc.Region == nil || c.Region == "":
		v.add(path+".region", "required")
	case len(c.Region) > 63 || !regionRE.MatchString(c.Region):
		v.add(path+".region", "%q must be a DNS label: lowercase letters, digits and '-', at most 63 characters", c.Region)
	}

	c.InsecureSkipVerify = v.boolean(path+".insecureSkipVerify", rc.InsecureSkipVerify, false)
	c.URLs = v.apiURLs(path, rc, c.InsecureSkipVerify)

	c.TokenID = v.str(path+".tokenID", rc.TokenID)
	switch {
	case rc.TokenID == nil || c.TokenID == "":
		v.add(path+".tokenID", "required")
	case !pve.ValidTokenID(c.TokenID):
		v.add(path+".tokenID", "%q must have the form USER@REALM!TOKENID (e.g. pvelb@pve!ccm)", c.TokenID)
	}

	c.TokenSecret, c.TokenSecretFile = v.secret(path, rc)

	if rc.CAFile != nil {
		c.CAFile = v.caFile(path+".caFile", v.str(path+".caFile", rc.CAFile))
	}
	c.Timeout = v.duration(path+".timeout", rc.Timeout, DefaultTimeout, 100*time.Millisecond, 10*time.Minute)
	return c
}

// apiURLs reads `url` (one host) or `urls` (several hosts of the cluster,
// in preference order); exactly one of them is required.
func (v *validator) apiURLs(path string, rc *rawCluster, insecure bool) []string {
	switch {
	case rc.URL != nil && rc.URLs != nil:
		v.add(path, "set exactly one of url and urls, not both")
		return nil
	case rc.URL == nil && rc.URLs == nil:
		v.add(path+".url", "required (or urls, a list of the cluster's hosts)")
		return nil
	case rc.URL != nil:
		if u := v.apiURL(path+".url", rc.URL, insecure); u != "" {
			return []string{u}
		}
		return nil
	}
	list, ok := rc.URLs.([]any)
	if !ok {
		v.add(path+".urls", "must be a list of URLs, got %s", kindOf(rc.URLs))
		return nil
	}
	if len(list) == 0 {
		v.add(path+".urls", "must name at least one URL")
		return nil
	}
	var out []string
	for i, item := range list {
		p := fmt.Sprintf("%s.urls[%d]", path, i)
		u := v.apiURL(p, item, insecure)
		if u == "" {
			continue
		}
		if k := slices.Index(out, u); k >= 0 {
			v.add(p, "%s is listed twice", u)
			continue
		}
		out = append(out, u)
	}
	return out
}

func (v *validator) apiURL(path string, val any, insecure bool) string {
	s := v.str(path, val)
	if val == nil || s == "" {
		v.add(path, "required")
		return ""
	}
	u, err := pve.NormalizeURL(s, insecure)
	if err != nil {
		v.add(path, "%v", err)
		return ""
	}
	return u
}

func (v *validator) secret(path string, rc *rawCluster) (Secret, string) {
	inline := rc.TokenSecret != nil
	fromFile := rc.TokenSecretFile != nil
	switch {
	case inline && fromFile:
		v.add(path, "set exactly one of tokenSecret and tokenSecretFile, not both")
		return "", ""
	case !inline && !fromFile:
		v.add(path, "one of tokenSecret or tokenSecretFile is required")
		return "", ""
	case inline:
		s, ok := rc.TokenSecret.(string)
		if !ok {
			// Never echo the value: it may be the secret with a typo.
			v.add(path+".tokenSecret", "must be a string, got %s", kindOf(rc.TokenSecret))
			return "", ""
		}
		return v.checkSecret(path+".tokenSecret", s, "")
	}
	file := v.str(path+".tokenSecretFile", rc.TokenSecretFile)
	if file == "" {
		v.add(path+".tokenSecretFile", "must not be empty")
		return "", ""
	}
	file = v.resolve(file)
	data, err := os.ReadFile(file)
	if err != nil {
		v.add(path+".tokenSecretFile", "cannot read %s: %v", file, pathErrReason(err))
		return "", file
	}
	return v.checkSecret(path+".tokenSecretFile", strings.TrimSpace(string(data)), file)
}

// checkSecret validates a secret without ever putting it in a message.
func (v *validator) checkSecret(path, s, file string) (Secret, string) {
	where := ""
	if file != "" {
		where = " in " + file
	}
	switch {
	case s == "":
		v.add(path, "secret%s is empty", where)
		return "", file
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		v.add(path, "secret%s contains whitespace or control characters", where)
		return "", file
	}
	return Secret(s), file
}

func (v *validator) caFile(path, file string) string {
	if file == "" {
		v.add(path, "must not be empty (leave it out to use the system roots)")
		return ""
	}
	file = v.resolve(file)
	if _, err := pve.LoadCA(file); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			v.add(path, "cannot read %s: %v", file, pathErrReason(err))
		} else {
			v.add(path, "%s %v", file, err)
		}
	}
	return file
}

func (v *validator) nics(path string, val any) []string {
	if val == nil {
		return []string{DefaultNIC}
	}
	list, ok := val.([]any)
	if !ok {
		v.add(path, "must be a list like [net0], got %s", kindOf(val))
		return nil
	}
	if len(list) == 0 {
		v.add(path, "must name at least one NIC (e.g. [net0])")
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for i, item := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		s, ok := item.(string)
		switch {
		case !ok:
			v.add(p, "must be a string, got %s", kindOf(item))
		case !pve.ValidNIC(s):
			v.add(p, "%q is not a Proxmox NIC name (net0 to net31)", s)
		case seen[s]:
			v.add(p, "duplicate NIC %q", s)
		default:
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// extraAddresses reads firewall.extraAddresses (its shape checked by
// checkShape, unknown keys by the strict decoder).
func (v *validator) extraAddresses(path string, list []rawExtraAddress) []ExtraAddress {
	var out []ExtraAddress
	names := map[string]int{}
	owner := map[netip.Addr]string{}
	for i, raw := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		var e ExtraAddress
		e.Name = v.str(p+".name", raw.Name)
		switch {
		case e.Name == "":
			v.add(p+".name", "required")
		case len(e.Name) > 63 || !regionRE.MatchString(e.Name):
			v.add(p+".name", "%q must be a DNS label: lowercase letters, digits and '-', at most 63 characters", e.Name)
		default:
			if first, dup := names[e.Name]; dup {
				v.add(p+".name", "duplicate name %q (also %s[%d])", e.Name, path, first)
			}
			names[e.Name] = i
		}
		addrs, ok := raw.Addresses.([]any)
		switch {
		case raw.Addresses == nil:
			v.add(p+".addresses", "required: a list of IP addresses, e.g. [192.0.2.5]")
		case !ok:
			v.add(p+".addresses", "must be a list of IP addresses, got %s", kindOf(raw.Addresses))
		case len(addrs) == 0:
			v.add(p+".addresses", "must name at least one address")
		}
		for j, a := range addrs {
			ap := fmt.Sprintf("%s.addresses[%d]", p, j)
			s, ok := a.(string)
			if !ok {
				v.add(ap, "must be a string, got %s", kindOf(a))
				continue
			}
			ip, err := netip.ParseAddr(s)
			if err != nil || ip.Zone() != "" || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() {
				v.add(ap, "%q is not a unicast IP address (one address, no prefix length)", s)
				continue
			}
			ip = ip.Unmap()
			if prev, dup := owner[ip]; dup {
				v.add(ap, "%s is listed twice (also %s)", ip, prev)
				continue
			}
			owner[ip] = ap
			e.Addresses = append(e.Addresses, ip)
		}
		if raw.NodeSelector == nil {
			v.add(p+".nodeSelector", `required: the Nodes whose VMs send from these addresses, e.g. "node-role.kubernetes.io/control-plane" ("" for every Node)`)
		} else {
			sel := v.str(p+".nodeSelector", raw.NodeSelector)
			parsed, err := labels.Parse(sel)
			if err != nil {
				v.add(p+".nodeSelector", "%q is not a label selector: %v", sel, err)
			}
			e.NodeSelector = parsed
		}
		out = append(out, e)
	}
	return out
}

func (v *validator) resolve(file string) string {
	if filepath.IsAbs(file) || v.baseDir == "" {
		return filepath.Clean(file)
	}
	return filepath.Join(v.baseDir, file)
}

// pathErrReason drops the path (already in the message) from an os error.
func pathErrReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (v *validator) str(path string, val any) string {
	if val == nil {
		return ""
	}
	s, ok := val.(string)
	if !ok {
		v.add(path, "must be a string, got %s", kindOf(val))
		return ""
	}
	return s
}

func (v *validator) boolean(path string, val any, def bool) bool {
	if val == nil {
		return def
	}
	b, ok := val.(bool)
	if !ok {
		v.add(path, "must be true or false, got %s", kindOf(val))
		return def
	}
	return b
}

func (v *validator) duration(path string, val any, def, minimum, maximum time.Duration) time.Duration {
	if val == nil {
		return def
	}
	s, ok := val.(string)
	if !ok {
		v.add(path, "must be a duration string like %q, got %s", def.String(), kindOf(val))
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.add(path, "%q is not a duration (use units, e.g. %q)", s, def.String())
		return def
	}
	if d < minimum || d > maximum {
		v.add(path, "%s is out of range [%s, %s]", d, minimum, maximum)
		return def
	}
	return d
}
