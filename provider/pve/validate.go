package pve

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
)

// Proxmox's own rules for the names and addresses pvelb hands it, written
// once: the cloud config (provider/config), the client (New) and the
// firewall reconciler check with these.

// tokenIDRE follows pve-access-control: user (no whitespace, ':', '/', and
// no '@', '!' or '=', which would make the USER@REALM!TOKENID=SECRET header
// ambiguous), realm and token name starting with a letter and at least two
// characters long (pve-realm, pve-tokenid).
var tokenIDRE = regexp.MustCompile(`^[^\s:/@!=]+@[A-Za-z][A-Za-z0-9._-]+![A-Za-z][A-Za-z0-9._-]+$`)

// ValidTokenID reports whether id is an API token ID USER@REALM!TOKENID.
func ValidTokenID(id string) bool { return tokenIDRE.MatchString(id) }

// MaxNIC is the highest netN a QEMU VM can have (qemu-server's MAX_NETS is
// 32).
const MaxNIC = 31

var nicRE = regexp.MustCompile(`^net([0-9]|[12][0-9]|3[01])$`)

// ValidNIC reports whether name is a QEMU VM's NIC, net0 to net31 (no
// leading zero).
func ValidNIC(name string) bool { return nicRE.MatchString(name) }

// ipsetNameRE is Proxmox's IPSet name format, restricted to lowercase because
// Proxmox lowercases names when it reloads the firewall config: a set created
// as "VIPs" is later reachable only as "vips".
var ipsetNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{1,63}$`)

// ValidateIPSetName checks an IPSet name pvelb creates or writes.
func ValidateIPSetName(name string) error {
	if !ipsetNameRE.MatchString(name) {
		return fmt.Errorf("ipset name %q: must match ^[a-z][a-z0-9_-]+$ and be 2 to 64 characters", name)
	}
	return nil
}

// NormalizeURL checks a Proxmox API URL and returns it with its path
// ending in /api2/json (added when the path is empty). http is allowed only
// with insecure. The error says what is wrong without repeating the URL,
// which the caller names.
func NormalizeURL(raw string, insecure bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url errors quote the input; a URL is not a secret unless it
		// carries userinfo, which is refused below anyway.
		return "", fmt.Errorf("not a valid URL: %v", errors.Unwrap(err))
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && insecure:
	case u.Scheme == "http":
		return "", errors.New("must be an https URL (http is only allowed with insecureSkipVerify: true)")
	default:
		return "", fmt.Errorf("must be an https URL, got scheme %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "", errors.New("must name a host")
	}
	if u.User != nil {
		return "", errors.New("must not carry credentials; use tokenID and tokenSecret")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("must not have a query or fragment")
	}
	p := strings.TrimRight(u.Path, "/")
	switch {
	case p == "":
		p = "/api2/json"
	case !strings.HasSuffix(p, "/api2/json"):
		return "", fmt.Errorf("path must end in /api2/json (e.g. https://pve.example.com:8006/api2/json), got %q", u.Path)
	}
	u.Path, u.RawPath = p, ""
	return u.String(), nil
}

// LoadCA reads a PEM CA bundle.
func LoadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("holds no PEM certificate")
	}
	return pool, nil
}

// TLSConfig is the TLS configuration for a Proxmox API: the system roots,
// or caFile's certificates, or no verification at all (insecure, which
// excludes caFile).
func TLSConfig(caFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if insecure {
		if caFile != "" {
			return nil, fmt.Errorf("caFile %q: cannot be combined with insecureSkipVerify", caFile)
		}
		cfg.InsecureSkipVerify = true //nolint:gosec // the user's explicit, loudly warned choice
		return cfg, nil
	}
	if caFile == "" {
		return cfg, nil
	}
	pool, err := LoadCA(caFile)
	if err != nil {
		return nil, fmt.Errorf("caFile %q: %v", caFile, err)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// IPFilterSet is the name of the IPSet that Proxmox's ipfilter option uses
// for a VM's NIC: the source addresses the NIC may send from.
func IPFilterSet(nic string) string { return "ipfilter-" + nic }
