package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/provider/pve"
)

// fuzzSeeds are cloud configs from the tests and docs, valid and not.
var fuzzSeeds = []string{
	minimal,
	"",
	"- a\n- b\n",
	"clusters: [\n",
	"clusters: []\nclusters: []\n",
	"clusters: {region: a}\n",
	"clusters: [x]\n",
	minimal + "firewall: true\n",
	minimal + "instances:\n  addresses: provided-and-agent\n  cacheTTL: 0s\n",
	minimal + "firewall:\n  enabled: false\n  clusterIPSet: k8s_vips-1\n  nics: [net0, net1, net31]\n  admitRanges: true\n  resyncPeriod: 5m\n",
	minimal + "firewall:\n  nics: [net0, eth0, net32, net0]\n",
	minimal + "loadBalancer:\n  serveClasslessServices: false\n",
	minimal + "bogus: 1\ninstances:\n  adresses: provided\n",
	`
clusters:
  - region: pve-west
    url: https://pve.example.com:8006/
    tokenID: pvelb@pve!ccm
    tokenSecretFile: token
    caFile: ca.pem
    timeout: 30s
  - region: pve-lab
    url: http://[2001:db8::1]:8006/api2/json/
    insecureSkipVerify: true
    tokenID: "root@pam!tk"
    tokenSecret: "` + validSecret + `"
`,
	`{"clusters":[{"region":"a1","url":"https://h/x/api2/json","tokenID":"u@r1!t1","tokenSecret":"s","timeout":"100ms"}]}`,
	"clusters:\n  - region: PVE/East\n    url: ftp://192.0.2.10/api2/json\n    tokenID: pvelb@pve\n    tokenSecret: 1234\n    timeout: soon\n",
	"clusters:\n  - &c {region: a, url: \"https://h\", tokenID: \"u@pve!tk\", tokenSecret: s}\n  - *c\n",
}

// fuzzFiles are the only files the fuzzed configs may name: anything else
// (an absolute path, "..") is skipped so a mutated path cannot make the
// fuzzer read /dev/zero or other files of the machine.
var fuzzFiles = map[string]bool{"token": true, "empty-token": true, "spaced-token": true, "ca.pem": true, "not-pem": true, "a-directory": true, "nope": true}

// FuzzParse feeds cloud config documents to Parse. It must not panic; an
// accepted config must satisfy the documented rules and be a fixed point
// (written back out as YAML it parses to the same Config); a refused one
// must name, in every problem it reports, the field path at fault.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	dir := testDir(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		top, ok := fuzzTree(data)
		if !ok {
			t.Skip("names a file outside the test directory")
		}
		cfg, err := Parse(data, dir)
		if err != nil {
			checkErrorPaths(t, data, top, err)
			return
		}
		checkConfig(t, data, dir, cfg)
		out := formatConfig(cfg)
		back, err := Parse(out, dir)
		if err != nil {
			t.Fatalf("Parse(%q) accepted; its rewrite\n%s\nis refused: %v", data, out, err)
		}
		if !reflect.DeepEqual(cfg, back) {
			t.Fatalf("Parse(%q) = %+v; its rewrite parses to %+v", data, cfg, back)
		}
	})
}

// fuzzTree decodes data the way Parse does, returning the top-level mapping
// (nil if the document is not one) and whether every file path in it is one
// of fuzzFiles.
func fuzzTree(data []byte) (map[string]any, bool) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, true
	}
	var tree any
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(j, &tree); err != nil {
		return nil, true
	}
	top, _ := tree.(map[string]any)
	clusters, _ := top["clusters"].([]any)
	for _, c := range clusters {
		m, _ := c.(map[string]any)
		for _, k := range []string{"tokenSecretFile", "caFile"} {
			if v, ok := m[k].(string); ok && v != "" && !fuzzFiles[v] {
				return top, false
			}
		}
	}
	return top, true
}

// checkErrorPaths asserts each reported problem starts with "cloud config:"
// or a field path rooted at a key of the document (or a section the
// validator requires), so the user can find it.
func checkErrorPaths(t *testing.T, data []byte, top map[string]any, err error) {
	t.Helper()
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	roots := []string{"cloud config:", "clusters", "instances", "firewall", "loadBalancer"}
	for k := range top {
		roots = append(roots, k)
	}
	for _, e := range errs {
		msg := e.Error()
		named := false
		for _, r := range roots {
			if rest, ok := strings.CutPrefix(msg, r); ok && (strings.HasSuffix(r, ":") || strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "[") || strings.HasPrefix(rest, ": ")) {
				named = true
				break
			}
		}
		if !named {
			t.Fatalf("Parse(%q): problem %q names no field", data, msg)
		}
	}
}

// checkConfig asserts the documented rules of an accepted config.
func checkConfig(t *testing.T, data []byte, dir string, cfg *Config) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("Parse(%q) = %+v: %s", data, cfg, fmt.Sprintf(format, args...))
	}
	if len(cfg.Clusters) == 0 {
		fail("no clusters")
	}
	regions := map[string]bool{}
	for _, c := range cfg.Clusters {
		switch {
		case len(c.Region) > 63 || !regionRE.MatchString(c.Region) || regions[c.Region]:
			fail("region %q", c.Region)
		case len(c.URLs) == 0 || slices.ContainsFunc(c.URLs, func(u string) bool {
			return !strings.HasSuffix(u, "/api2/json") || !(strings.HasPrefix(u, "https://") || c.InsecureSkipVerify && strings.HasPrefix(u, "http://"))
		}):
			fail("urls %q", c.URLs)
		case !pve.ValidTokenID(c.TokenID):
			fail("tokenID %q", c.TokenID)
		case c.TokenSecret == "" || strings.ContainsFunc(c.TokenSecret.Reveal(), func(r rune) bool { return r <= ' ' || r == 0x7f }):
			fail("token secret empty or has whitespace")
		case c.TokenSecretFile != "" && filepath.Dir(c.TokenSecretFile) != dir:
			fail("tokenSecretFile %q", c.TokenSecretFile)
		case c.Timeout < 100*time.Millisecond || c.Timeout > 10*time.Minute:
			fail("timeout %v", c.Timeout)
		}
		regions[c.Region] = true
	}
	if m := cfg.Instances.Addresses; m != AddressesProvided && m != AddressesProvidedAndAgent {
		fail("addresses %q", m)
	}
	if d := cfg.Instances.CacheTTL; d < 0 || d > time.Hour {
		fail("cacheTTL %v", d)
	}
	if d := cfg.Instances.LabelSyncPeriod; d < 0 || d > 0 && d < time.Second || d > time.Hour {
		fail("labelSyncPeriod %v", d)
	}
	if d := cfg.Firewall.ResyncPeriod; d < time.Second || d > 24*time.Hour {
		fail("resyncPeriod %v", d)
	}
	if n := cfg.Firewall.ClusterIPSet; pve.ValidateIPSetName(n) != nil {
		fail("clusterIPSet %q", n)
	}
	if len(cfg.Firewall.NICs) == 0 {
		fail("no NICs")
	}
	seen := map[string]bool{}
	for _, n := range cfg.Firewall.NICs {
		if !pve.ValidNIC(n) || seen[n] {
			fail("nic %q", n)
		}
		seen[n] = true
	}
}

// formatConfig writes cfg back as a cloud config, every field explicit.
// JSON is YAML, and json.Marshal quotes every string safely.
func formatConfig(cfg *Config) []byte {
	type cluster struct {
		Region             string   `json:"region"`
		URLs               []string `json:"urls"`
		TokenID            string   `json:"tokenID"`
		TokenSecret        string   `json:"tokenSecret,omitempty"`
		TokenSecretFile    string   `json:"tokenSecretFile,omitempty"`
		CAFile             string   `json:"caFile,omitempty"`
		InsecureSkipVerify bool     `json:"insecureSkipVerify"`
		Timeout            string   `json:"timeout"`
	}
	doc := map[string]any{
		"instances": map[string]any{"addresses": cfg.Instances.Addresses, "cacheTTL": cfg.Instances.CacheTTL.String(),
			"labelSyncPeriod":                   cfg.Instances.LabelSyncPeriod.String(),
			"approveKubeletServingCertificates": cfg.Instances.ApproveKubeletServingCertificates},
		"firewall": map[string]any{"enabled": cfg.Firewall.Enabled, "clusterIPSet": cfg.Firewall.ClusterIPSet,
			"nics": cfg.Firewall.NICs, "admitRanges": cfg.Firewall.AdmitRanges, "resyncPeriod": cfg.Firewall.ResyncPeriod.String()},
		"loadBalancer": map[string]any{"serveClasslessServices": cfg.LoadBalancer.ServeClasslessServices},
	}
	var cs []cluster
	for _, c := range cfg.Clusters {
		cc := cluster{Region: c.Region, URLs: c.URLs, TokenID: c.TokenID, TokenSecretFile: c.TokenSecretFile,
			CAFile: c.CAFile, InsecureSkipVerify: c.InsecureSkipVerify, Timeout: c.Timeout.String()}
		if c.TokenSecretFile == "" {
			cc.TokenSecret = c.TokenSecret.Reveal()
		}
		cs = append(cs, cc)
	}
	doc["clusters"] = cs
	out, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return out
}

// FuzzParseSecretNotEchoed places a fuzzed inline tokenSecret in an otherwise
// valid config. Whatever the secret holds, no error may repeat it: a secret
// with a typo is still mostly the secret, and errors end up in logs and
// events.
func FuzzParseSecretNotEchoed(f *testing.F) {
	for _, s := range []string{validSecret, "", "abc def", "tab\there", "nul\x00byte", "\u2028sep", "ünïcode", "\xff\xfe", "'quote\"", "\ufeffbom", "\u0085nel"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, secret string) {
		q, _ := json.Marshal(secret)
		// json.Marshal replaced invalid UTF-8; that is the secret Parse sees.
		var want string
		_ = json.Unmarshal(q, &want)
		doc := `{"clusters":[{"region":"pve-east","url":"https://192.0.2.10:8006/api2/json","tokenID":"pvelb@pve!ccm","tokenSecret":` + string(q) + `}]}`
		cfg, err := Parse([]byte(doc), "")
		if err == nil {
			if got := cfg.Clusters[0].TokenSecret.Reveal(); got != want {
				t.Fatalf("tokenSecret %q parsed as %q", want, got)
			}
			// Printing must not depend on the secret at all (comparing with
			// another secret, not searching for this one, so that a secret
			// like "0000" that also occurs in "10000000000" is no alarm).
			show := func(c *Config) string { return fmt.Sprintf("%v %+v %#v", c, c, c) }
			other := *cfg
			other.Clusters = []Cluster{cfg.Clusters[0]}
			other.Clusters[0].TokenSecret = "other"
			if a, b := show(cfg), show(&other); a != b {
				t.Fatalf("printing the config depends on secret %q:\n%s\n%s", want, a, b)
			}
			return
		}
		// The validator's own fixed messages may happen to contain a short
		// secret ("secret", "empty"); what is left must not.
		msg := err.Error()
		for _, fixed := range []string{"clusters[0].tokenSecret: secret is empty", "clusters[0].tokenSecret: secret contains whitespace or control characters"} {
			msg = strings.ReplaceAll(msg, fixed, "")
		}
		if len(want) >= 8 && strings.Contains(msg, want) {
			t.Fatalf("error for secret %q repeats it: %s", want, msg)
		}
		var j interface{ Unwrap() []error }
		if errors.As(err, &j) {
			for _, e := range j.Unwrap() {
				if !strings.HasPrefix(e.Error(), "clusters[0].tokenSecret: ") && !strings.HasPrefix(e.Error(), "cloud config: ") {
					t.Fatalf("secret %q: unexpected problem %q", want, e)
				}
			}
		}
	})
}

// FuzzParseFields puts fuzzed values into the fields of a well-formed config,
// so that (unlike FuzzParse, whose mutations rarely stay valid) accepted
// configs are common: the url normalisation, durations, names and NIC lists
// are checked for the rules and the rewrite fixed point, and refusals must
// name exactly the fields that were fuzzed.
func FuzzParseFields(f *testing.F) {
	f.Add("pve-east", "https://192.0.2.10:8006/api2/json", "pvelb@pve!ccm", "10s", "15s", "60s", "pvelb-vips", "net0", false, "provided")
	f.Add("pve-west", "https://pve.example.com:8006/", "root@pam!tk", "100ms", "0s", "24h", "k8s_vips-1", "net31", false, "provided-and-agent")
	f.Add("lab", "http://[2001:db8::1]:8006/api2/json/", "a@b1!c.d", "10m", "1h", "1s", "ab", "net9", true, "")
	f.Add("a", "https://h/x/api2/json//", "x@y!z", "1.5s", "59m59s", "1m", "v", "net32", false, "agent")
	f.Add("PVE/East", "https://root:pw@192.0.2.10/api2/json", "pvelb@pve", "-1s", "soon", "0", "VIPs", "eth0", false, "provided")
	f.Add("pve", "https://[::1", "u@r!t%", "1e3s", "1us", "25h", "a b", "net01", true, "Provided")
	f.Add("pve", "https://h/api2/json?x=1#y", "u@@r!tt", "", "", "", "", "", false, "provided")
	f.Add("pve", "HTTPS://H%41:8006/./api2/json", "u@r!tt", "10s", "15s", "60s", "pvelb-vips", "net0", false, "provided")
	f.Fuzz(func(t *testing.T, region, url, tokenID, timeout, cacheTTL, resync, ipset, nic string, insecure bool, mode string) {
		doc := map[string]any{
			"clusters": []map[string]any{{"region": region, "url": url, "tokenID": tokenID, "tokenSecret": validSecret,
				"timeout": timeout, "insecureSkipVerify": insecure}},
			"instances": map[string]any{"addresses": mode, "cacheTTL": cacheTTL},
			"firewall":  map[string]any{"clusterIPSet": ipset, "nics": []string{nic}, "resyncPeriod": resync},
		}
		data, err := json.Marshal(doc)
		if err != nil {
			t.Skip()
		}
		cfg, err := Parse(data, "")
		if err != nil {
			var j interface{ Unwrap() []error }
			errs := []error{err}
			if errors.As(err, &j) {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				ok := false
				for _, p := range []string{"clusters[0].region: ", "clusters[0].url: ", "clusters[0].tokenID: ", "clusters[0].timeout: ",
					"instances.addresses: ", "instances.cacheTTL: ", "firewall.clusterIPSet: ", "firewall.nics[0]: ", "firewall.resyncPeriod: ",
					// A character YAML refuses in a fuzzed value: the
					// message must say where it is.
					"cloud config: line "} {
					ok = ok || strings.HasPrefix(e.Error(), p)
				}
				if !ok {
					t.Fatalf("Parse(%s): problem %q is not about a fuzzed field", data, e)
				}
			}
			return
		}
		checkConfig(t, data, "", cfg)
		c := cfg.Clusters[0]
		if c.Region != region || c.TokenID != tokenID || cfg.Firewall.ClusterIPSet != ipset || !reflect.DeepEqual(cfg.Firewall.NICs, []string{nic}) {
			t.Fatalf("Parse(%s) = %+v: a name was changed", data, cfg)
		}
		back, err := Parse(formatConfig(cfg), "")
		if err != nil || !reflect.DeepEqual(cfg, back) {
			t.Fatalf("Parse(%s) = %+v; its rewrite parses to %+v, %v", data, cfg, back, err)
		}
	})
}
