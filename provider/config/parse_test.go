package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

const validSecret = "0b8c7f3e-5a1d-4c2b-9e6f-7a8b9c0d1e2f"

// testDir holds a token secret file, a CA bundle and a non-PEM file, and is
// used as the base dir so relative paths are exercised.
func testDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("token", validSecret+"\n")
	write("empty-token", "\n")
	write("spaced-token", "abc def\n")
	write("ca.pem", selfSignedPEM(t))
	write("not-pem", "hello")
	if err := os.Mkdir(filepath.Join(dir, "a-directory"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func selfSignedPEM(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pvelb test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

const minimal = `
clusters:
  - region: pve-east
    url: https://192.0.2.10:8006/api2/json
    tokenID: pvelb@pve!ccm
    tokenSecret: "` + validSecret + `"
`

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Clusters: []Cluster{{
			Region: "pve-east", URLs: []string{"https://192.0.2.10:8006/api2/json"}, TokenID: "pvelb@pve!ccm",
			TokenSecret: validSecret, Timeout: DefaultTimeout,
		}},
		Instances:    Instances{Addresses: AddressesProvided, CacheTTL: DefaultCacheTTL, LabelSyncPeriod: DefaultLabelSyncPeriod},
		Firewall:     Firewall{Enabled: true, ClusterIPSet: "pvelb-vips", NICs: []string{"net0"}, ResyncPeriod: 60 * time.Second},
		LoadBalancer: LoadBalancer{ServeClasslessServices: true},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParseURLs(t *testing.T) {
	doc := `
clusters:
  - region: pve-east
    urls:
      - https://pve1.example.com:8006
      - https://192.0.2.12:8006/api2/json
      - https://[2001:db8::13]:8006/
    tokenID: pvelb@pve!ccm
    tokenSecret: "` + validSecret + `"
`
	cfg, err := Parse([]byte(doc), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []string{"https://pve1.example.com:8006/api2/json", "https://192.0.2.12:8006/api2/json", "https://[2001:db8::13]:8006/api2/json"}
	if got := cfg.Clusters[0].URLs; !reflect.DeepEqual(got, want) {
		t.Errorf("URLs = %q; want %q (normalised, in the file's order)", got, want)
	}
}

func TestParseExtraAddresses(t *testing.T) {
	doc := minimal + `
firewall:
  extraAddresses:
    - name: talos-vip
      addresses: [192.0.2.5, "2001:db8::5"]
      nodeSelector: node-role.kubernetes.io/control-plane
    - name: keepalived
      addresses: [198.51.100.9]
      nodeSelector: ""
`
	cfg, err := Parse([]byte(doc), "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	ex := cfg.Firewall.ExtraAddresses
	if len(ex) != 2 || ex[0].Name != "talos-vip" || fmt.Sprint(ex[0].Addresses) != "[192.0.2.5 2001:db8::5]" || ex[1].Name != "keepalived" {
		t.Fatalf("extraAddresses = %+v", ex)
	}
	cp := labels.Set{"node-role.kubernetes.io/control-plane": ""}
	if !ex[0].NodeSelector.Matches(cp) || ex[0].NodeSelector.Matches(labels.Set{"x": "y"}) {
		t.Errorf("talos-vip selector %q", ex[0].NodeSelector)
	}
	if !ex[1].NodeSelector.Matches(labels.Set{"x": "y"}) {
		t.Errorf("empty selector must select every Node, got %q", ex[1].NodeSelector)
	}

	for _, tc := range []struct{ doc, want string }{
		{"firewall:\n  extraAddresses: {name: a}\n", "firewall.extraAddresses: must be a list"},
		{"firewall:\n  extraAddresses: [{addresses: [192.0.2.5], nodeSelector: a}]\n", "firewall.extraAddresses[0].name: required"},
		{"firewall:\n  extraAddresses: [{name: Talos, addresses: [192.0.2.5], nodeSelector: a}]\n", `firewall.extraAddresses[0].name: "Talos" must be a DNS label`},
		{"firewall:\n  extraAddresses: [{name: a, nodeSelector: a}]\n", "firewall.extraAddresses[0].addresses: required"},
		{"firewall:\n  extraAddresses: [{name: a, addresses: [192.0.2.0/24], nodeSelector: a}]\n", `firewall.extraAddresses[0].addresses[0]: "192.0.2.0/24" is not a unicast IP address`},
		{"firewall:\n  extraAddresses: [{name: a, addresses: [192.0.2.5]}]\n", "firewall.extraAddresses[0].nodeSelector: required"},
		{"firewall:\n  extraAddresses: [{name: a, addresses: [192.0.2.5], nodeSelector: \"a in (\"}]\n", "firewall.extraAddresses[0].nodeSelector: \"a in (\" is not a label selector"},
		{"firewall:\n  extraAddresses: [{name: a, addresses: [192.0.2.5], nodeSelector: a, vip: x}]\n", "firewall.extraAddresses[0].vip: unknown field"},
		{"firewall:\n  extraAddresses: [{name: a, addresses: [192.0.2.5], nodeSelector: a}, {name: a, addresses: [192.0.2.5], nodeSelector: b}]\n",
			"firewall.extraAddresses[1].name: duplicate name \"a\""},
		{"firewall:\n  extraAddresses: [{name: a, addresses: [192.0.2.5], nodeSelector: a}, {name: b, addresses: [192.0.2.5], nodeSelector: b}]\n",
			"firewall.extraAddresses[1].addresses[0]: 192.0.2.5 is listed twice (also firewall.extraAddresses[0].addresses[0])"},
	} {
		_, err := Parse([]byte(minimal+tc.doc), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v; want %q", tc.doc, err, tc.want)
		}
	}
}

func TestParseFull(t *testing.T) {
	dir := testDir(t)
	doc := `
clusters:
  - region: pve-east
    url: https://pve1.example.com:8006/api2/json/
    tokenID: pvelb@pve!ccm
    tokenSecretFile: token
    caFile: ca.pem
    timeout: 3s
  - region: pve-west
    url: http://198.51.100.7:8006
    tokenID: "root@pam!lab-1"
    tokenSecret: s3cr3t
    insecureSkipVerify: true
instances:
  addresses: provided-and-agent
  cacheTTL: 0s
  labelSyncPeriod: 0s
firewall:
  enabled: false
  clusterIPSet: my_vips-2
  nics: [net0, net31]
  admitRanges: true
  resyncPeriod: 2m
loadBalancer:
  serveClasslessServices: false
`
	cfg, err := Parse([]byte(doc), dir)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Clusters: []Cluster{{
			Region: "pve-east", URLs: []string{"https://pve1.example.com:8006/api2/json"}, TokenID: "pvelb@pve!ccm",
			TokenSecret: validSecret, TokenSecretFile: filepath.Join(dir, "token"),
			CAFile: filepath.Join(dir, "ca.pem"), Timeout: 3 * time.Second,
		}, {
			Region: "pve-west", URLs: []string{"http://198.51.100.7:8006/api2/json"}, TokenID: "root@pam!lab-1",
			TokenSecret: "s3cr3t", InsecureSkipVerify: true, Timeout: DefaultTimeout,
		}},
		Instances:    Instances{Addresses: AddressesProvidedAndAgent, CacheTTL: 0},
		Firewall:     Firewall{Enabled: false, ClusterIPSet: "my_vips-2", NICs: []string{"net0", "net31"}, AdmitRanges: true, ResyncPeriod: 2 * time.Minute},
		LoadBalancer: LoadBalancer{ServeClasslessServices: false},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", cfg, want)
	}
	if got := cfg.Region("pve-west"); got == nil || got.TokenID != "root@pam!lab-1" {
		t.Errorf("Region(pve-west) = %+v", got)
	}
	if cfg.Region("nope") != nil {
		t.Errorf("Region(nope) should be nil")
	}
}

// cluster builds a one-cluster document with the given extra/override lines.
func cluster(lines ...string) string {
	fields := map[string]string{
		"region":      "pve-east",
		"url":         "https://192.0.2.10:8006/api2/json",
		"tokenID":     "pvelb@pve!ccm",
		"tokenSecret": `"` + validSecret + `"`,
	}
	order := []string{"region", "url", "tokenID", "tokenSecret"}
	var extra []string
	for _, l := range lines {
		k, val, _ := strings.Cut(l, ":")
		if _, known := fields[k]; known {
			fields[k] = strings.TrimSpace(val)
			continue
		}
		extra = append(extra, l)
	}
	var b strings.Builder
	b.WriteString("clusters:\n  - ")
	first := true
	emit := func(l string) {
		if !first {
			b.WriteString("    ")
		}
		first = false
		b.WriteString(l + "\n")
	}
	for _, k := range order {
		if fields[k] == "<omit>" {
			continue
		}
		emit(k + ": " + fields[k])
	}
	for _, l := range extra {
		emit(l)
	}
	return b.String()
}

func TestParseErrors(t *testing.T) {
	dir := testDir(t)
	tests := []struct {
		name string
		doc  string
		want []string // every substring must appear in the error
	}{
		{"empty document", "", []string{"clusters: at least one cluster is required"}},
		{"not a mapping", "- a\n- b\n", []string{"cloud config: must be a mapping, got a list"}},
		{"yaml syntax", "clusters: [\n", []string{"cloud config:"}},
		{"control character", "clusters: []\nfoo: \"a\x7fb\"\n", []string{"cloud config: line 2, column 8: character U+007F is not allowed in YAML"}},
		{"invalid UTF-8", "a: \xff\n", []string{"cloud config: line 1, column 4: invalid UTF-8"}},
		{"duplicate key", "clusters: []\nclusters: []\n", []string{`"clusters" already set`}},
		{"clusters not a list", "clusters: {region: a}\n", []string{"clusters: must be a list, got a mapping"}},
		{"cluster item not a mapping", "clusters: [x]\n", []string{"clusters[0]: must be a mapping, got a string"}},
		{"section not a mapping", minimal + "firewall: true\n", []string{"firewall: must be a mapping, got a boolean"}},
		{
			"unknown keys everywhere, all reported",
			cluster("tokenSecrt: x") + "bogus: 1\ninstances:\n  adresses: provided\n",
			[]string{`clusters[0].tokenSecrt: unknown field`, `bogus: unknown field`, `instances.adresses: unknown field`},
		},
		{"keys are case sensitive", cluster("TokenID: x"), []string{"clusters[0].TokenID: unknown field"}},
		{"missing region", cluster("region: <omit>"), []string{"clusters[0].region: required"}},
		{"bad region", cluster("region: PVE/East"), []string{`clusters[0].region: "PVE/East" must be a DNS label`}},
		{"region wrong type", cluster("region: 12"), []string{"clusters[0].region: must be a string, got a number"}},
		{
			"duplicate regions",
			minimal + strings.TrimPrefix(cluster(), "clusters:\n"),
			[]string{`clusters[1].region: duplicate region "pve-east" (also clusters[0])`},
		},
		{"labelSyncPeriod too short", minimal + "instances:\n  labelSyncPeriod: 10ms\n", []string{"instances.labelSyncPeriod: 10ms is too short: at least 1s, or 0 to turn it off"}},
		{"labelSyncPeriod too long", minimal + "instances:\n  labelSyncPeriod: 2h\n", []string{"instances.labelSyncPeriod: 2h0m0s is out of range"}},
		{"missing url", cluster("url: <omit>"), []string{"clusters[0].url: required (or urls"}},
		{"url and urls", cluster("urls: [https://192.0.2.11:8006]"), []string{"clusters[0]: set exactly one of url and urls, not both"}},
		{"urls not a list", cluster("url: <omit>", "urls: https://192.0.2.11:8006"), []string{"clusters[0].urls: must be a list of URLs, got a string"}},
		{"urls empty", cluster("url: <omit>", "urls: []"), []string{"clusters[0].urls: must name at least one URL"}},
		{"urls item bad", cluster("url: <omit>", "urls: [https://192.0.2.11:8006, ftp://192.0.2.12, 7]"),
			[]string{`clusters[0].urls[1]: must be an https URL, got scheme "ftp"`, "clusters[0].urls[2]: must be a string, got a number"}},
		{"urls twice", cluster("url: <omit>", "urls: [https://192.0.2.11:8006, \"https://192.0.2.11:8006/api2/json\"]"),
			[]string{"clusters[0].urls[1]: https://192.0.2.11:8006/api2/json is listed twice"}},
		{"http url", cluster("url: http://192.0.2.10:8006/api2/json"), []string{"clusters[0].url: must be an https URL (http is only allowed with insecureSkipVerify: true)"}},
		{"ftp url", cluster("url: ftp://192.0.2.10/api2/json"), []string{`clusters[0].url: must be an https URL, got scheme "ftp"`}},
		{"unparsable url", cluster("url: \"https://[::1\""), []string{"clusters[0].url: not a valid URL"}},
		{"no host", cluster("url: https:///api2/json"), []string{"clusters[0].url: must name a host"}},
		{"credentials in url", cluster("url: https://root:pw@192.0.2.10:8006/api2/json"), []string{"clusters[0].url: must not carry credentials"}},
		{"wrong path", cluster("url: https://192.0.2.10:8006/api/json"), []string{"clusters[0].url: path must end in /api2/json"}},
		{"query", cluster("url: https://192.0.2.10:8006/api2/json?x=1"), []string{"clusters[0].url: must not have a query"}},
		{"missing tokenID", cluster("tokenID: <omit>"), []string{"clusters[0].tokenID: required"}},
		{"tokenID without token", cluster("tokenID: pvelb@pve"), []string{`clusters[0].tokenID: "pvelb@pve" must have the form USER@REALM!TOKENID`}},
		{"tokenID without realm", cluster("tokenID: pvelb!ccm"), []string{"clusters[0].tokenID:"}},
		{"tokenID with space", cluster("tokenID: \"pve lb@pve!ccm\""), []string{"clusters[0].tokenID:"}},
		{"both secrets", cluster("tokenSecretFile: token"), []string{"clusters[0]: set exactly one of tokenSecret and tokenSecretFile, not both"}},
		{"neither secret", cluster("tokenSecret: <omit>"), []string{"clusters[0]: one of tokenSecret or tokenSecretFile is required"}},
		{"empty inline secret", cluster(`tokenSecret: ""`), []string{"clusters[0].tokenSecret: secret is empty"}},
		{"secret wrong type", cluster("tokenSecret: 1234"), []string{"clusters[0].tokenSecret: must be a string, got a number"}},
		{"missing secret file", cluster("tokenSecret: <omit>", "tokenSecretFile: nope"), []string{"clusters[0].tokenSecretFile: cannot read " + filepath.Join(dir, "nope") + ": no such file or directory"}},
		{"secret file is a directory", cluster("tokenSecret: <omit>", "tokenSecretFile: a-directory"), []string{"clusters[0].tokenSecretFile: cannot read " + filepath.Join(dir, "a-directory")}},
		{"empty secret file", cluster("tokenSecret: <omit>", "tokenSecretFile: empty-token"), []string{"clusters[0].tokenSecretFile: secret in " + filepath.Join(dir, "empty-token") + " is empty"}},
		{"whitespace in secret file", cluster("tokenSecret: <omit>", "tokenSecretFile: spaced-token"), []string{"clusters[0].tokenSecretFile: secret in " + filepath.Join(dir, "spaced-token") + " contains whitespace"}},
		{"missing CA file", cluster("caFile: /nonexistent/ca.pem"), []string{"clusters[0].caFile: cannot read /nonexistent/ca.pem: no such file or directory"}},
		{"CA file not PEM", cluster("caFile: not-pem"), []string{"clusters[0].caFile: " + filepath.Join(dir, "not-pem") + " holds no PEM certificate"}},
		{"insecure not bool", cluster("insecureSkipVerify: \"yes please\""), []string{"clusters[0].insecureSkipVerify: must be true or false, got a string"}},
		{"timeout number", cluster("timeout: 10"), []string{`clusters[0].timeout: must be a duration string like "10s", got a number`}},
		{"timeout garbage", cluster("timeout: soon"), []string{`clusters[0].timeout: "soon" is not a duration`}},
		{"timeout negative", cluster("timeout: -1s"), []string{"clusters[0].timeout: -1s is out of range"}},
		{"bad address mode", minimal + "instances:\n  addresses: agent\n", []string{`instances.addresses: must be "provided" or "provided-and-agent", got "agent"`}},
		{"negative cacheTTL", minimal + "instances:\n  cacheTTL: -5s\n", []string{"instances.cacheTTL: -5s is out of range"}},
		{"uppercase IPSet", minimal + "firewall:\n  clusterIPSet: VIPs\n", []string{`firewall.clusterIPSet: "VIPs" is not a valid IPSet name`}},
		{"short IPSet", minimal + "firewall:\n  clusterIPSet: v\n", []string{`firewall.clusterIPSet: "v" is not a valid IPSet name`}},
		{"long IPSet", minimal + "firewall:\n  clusterIPSet: v" + strings.Repeat("x", 64) + "\n", []string{"firewall.clusterIPSet:"}},
		{"IPSet with digit first", minimal + "firewall:\n  clusterIPSet: 1vips\n", []string{"firewall.clusterIPSet:"}},
		{"nics not a list", minimal + "firewall:\n  nics: net0\n", []string{"firewall.nics: must be a list like [net0], got a string"}},
		{"nics empty", minimal + "firewall:\n  nics: []\n", []string{"firewall.nics: must name at least one NIC"}},
		{"bad nic", minimal + "firewall:\n  nics: [net0, eth0, net32, net0]\n", []string{`firewall.nics[1]: "eth0" is not a Proxmox NIC name`, `firewall.nics[2]: "net32"`, `firewall.nics[3]: duplicate NIC "net0"`}},
		{"resync too short", minimal + "firewall:\n  resyncPeriod: 1ms\n", []string{"firewall.resyncPeriod: 1ms is out of range"}},
		{"enabled not bool", minimal + "firewall:\n  enabled: 1\n", []string{"firewall.enabled: must be true or false, got a number"}},
		{"serveClassless not bool", minimal + "loadBalancer:\n  serveClasslessServices: \"x\"\n", []string{"loadBalancer.serveClasslessServices: must be true or false"}},
		{
			"errors in several clusters are all reported",
			minimal + "  - region: pve-west\n    url: http://198.51.100.1/api2/json\n    tokenID: bad\n",
			[]string{"clusters[1].url: must be an https URL", "clusters[1].tokenID:", "clusters[1]: one of tokenSecret or tokenSecretFile is required"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc), dir)
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error containing %q", cfg, tt.want)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with the error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), validSecret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}

// A config with a secret and an error elsewhere must not show the secret,
// even when the secret is mistyped into another field's place.
func TestParseErrorsNeverShowSecrets(t *testing.T) {
	dir := testDir(t)
	for _, doc := range []string{
		cluster("timeout: soon"),
		cluster("tokenSecret: <omit>", "tokenSecretFile: token", "url: http://192.0.2.1/api2/json"),
		cluster("tokenSecret: [\"" + validSecret + "\"]"),
	} {
		_, err := Parse([]byte(doc), dir)
		if err == nil {
			t.Fatalf("Parse(%q) succeeded, want an error", doc)
		}
		if strings.Contains(err.Error(), validSecret) {
			t.Errorf("error leaks the secret: %v", err)
		}
	}
}

func TestLoadResolvesRelativeToConfigFile(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "cloud.yaml")
	doc := cluster("tokenSecret: <omit>", "tokenSecretFile: token")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	// Run from elsewhere so a cwd-relative lookup would fail.
	t.Chdir(t.TempDir())
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := cfg.Clusters[0].TokenSecret.Reveal(); got != validSecret {
		t.Errorf("secret = %q (len %d), want the file's content without newline", got, len(got))
	}
	if got, want := cfg.Clusters[0].TokenSecretFile, filepath.Join(dir, "token"); got != want {
		t.Errorf("TokenSecretFile = %q, want %q", got, want)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "reading cloud config") {
		t.Errorf("Load(missing) error = %v", err)
	}
}
