// Package pvesim is a stateful simulator of the Proxmox VE API for tests and
// demos: VMs, their config, status and guest agent, VM firewall options and
// cluster/VM firewall IPSets, with token auth, privileges, locks, digests and
// Proxmox's error shapes. Every request is checked against the real API
// schema (see package schema); behaviour the schema does not show follows
// shared/pve-api/FIREWALL-FACTS.md.
package pvesim

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/pvelb/pvelb/test/pvesim/schema"
)

// Options configure a Server.
type Options struct {
	Tokens []Token
	// Latency delays every request; WriteLatency delays every firewall write
	// while it holds the write lock, as a real .fw rewrite does.
	Latency      time.Duration
	WriteLatency time.Duration
	// SchemaFile is the apidata.js file; DefaultSchemaFile() when empty.
	SchemaFile string
	// LockTimeout is how long a write waits for a held firewall lock before
	// the 500 `got lock request timeout` (default 10s, like cfs_lock).
	LockTimeout time.Duration
	// AuthFailureDelay delays 401 answers (the real server waits ~3s; 0 here).
	AuthFailureDelay time.Duration
	// Version is what GET /version reports; derived from SchemaFile when empty.
	Version string
}

// Token is an API token. Privileges are Proxmox privilege names granted on
// every path ("VM.Audit"), or on one ACL path and below ("VM.Audit@/vms/100").
// Nil Privileges means all privileges everywhere.
type Token struct {
	ID         string // USER@REALM!TOKENID, e.g. "pvelb@pve!ccm"
	Secret     string
	Privileges []string
}

// VM is one simulated QEMU VM. Its Node is the Proxmox host it runs on; the
// set of hosts is implied by the VMs' nodes.
type VM struct {
	VMID      int
	Node      string
	Name      string
	UUID      string // smbios1 uuid (the Kubernetes node's systemUUID)
	SKU       string // smbios1 sku, stored base64-encoded as Proxmox does
	Cores     int
	Sockets   int
	MemoryMiB int
	Nets      map[int]string // netN index -> raw value "virtio=MAC,bridge=vmbr0,firewall=1"
	// IPConfigs are cloud-init ipconfigN values by N, e.g.
	// "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::10/64".
	IPConfigs map[int]string
	Status    string // "running" (default), "stopped" or "paused"
	// Agent lists what the guest agent reports; nil means no agent configured.
	Agent    []AgentIface
	Tags     string
	Template bool
}

// AgentIface is one interface the QEMU guest agent reports.
type AgentIface struct {
	Name  string
	MAC   string
	Addrs []netip.Prefix
}

// Fault makes matching requests fail: Method ("" = any) and PathPrefix
// (below /api2/json, "" = any) select them; Status and Reason are answered;
// Count limits how many requests fail (0 = until ClearFaults).
type Fault struct {
	Method     string
	PathPrefix string
	Status     int
	Reason     string
	Count      int
}

// Stats counts requests since the start or the last ResetStats. ByPath is
// keyed by "METHOD /path/{template}".
type Stats struct {
	Requests int
	Writes   int
	ByPath   map[string]int
}

// DefaultSchemaFile finds the PVE 9 schema: $PVELB_PVE_API_DIR, else
// shared/pve-api above the working directory.
func DefaultSchemaFile() (string, error) {
	dir, err := schema.FindDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, schema.PVE9File), nil
}

// schemas caches parsed schema files: parsing takes ~100ms and tests start
// many servers. A *schema.Schema is immutable once loaded.
var schemas sync.Map

func loadSchema(file string) (*schema.Schema, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	if s, ok := schemas.Load(abs); ok {
		return s.(*schema.Schema), nil
	}
	s, err := schema.Load(abs)
	if err != nil {
		return nil, err
	}
	schemas.Store(abs, s)
	return s, nil
}

var versionInName = regexp.MustCompile(`pve(\d+)(?:\.(\d+))?(?:\.(\d+))?`)

// versionFromSchema guesses the pve-manager version a schema file is from.
func versionFromSchema(file string) (version, release string) {
	g := versionInName.FindStringSubmatch(filepath.Base(file))
	switch {
	case g == nil:
		return "9.1.3", "9.1"
	case g[2] == "":
		if g[1] == "8" {
			return "8.4.14", "8.4"
		}
		return g[1] + ".0.0", g[1] + ".0"
	case g[3] == "":
		return g[1] + "." + g[2] + ".0", g[1] + "." + g[2]
	}
	return g[1] + "." + g[2] + "." + g[3], g[1] + "." + g[2]
}

// New builds a Server. It fails when the schema cannot be loaded or a token
// is malformed.
func New(opts Options) (*Server, error) {
	if opts.SchemaFile == "" {
		f, err := DefaultSchemaFile()
		if err != nil {
			return nil, err
		}
		opts.SchemaFile = f
	}
	sch, err := loadSchema(opts.SchemaFile)
	if err != nil {
		return nil, err
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 10 * time.Second
	}
	version, release := versionFromSchema(opts.SchemaFile)
	if opts.Version != "" {
		version, release = opts.Version, opts.Version
		if m := regexp.MustCompile(`^\d+\.\d+`).FindString(opts.Version); m != "" {
			release = m
		}
	}
	s := &Server{
		schema:    sch,
		opts:      opts,
		version:   version,
		release:   release,
		tokens:    map[string]Token{},
		vms:       map[int]*VM{},
		offline:   map[string]bool{},
		hosts:     map[string]bool{},
		firewalls: map[int]*firewall{},
		locks:     map[int]chan struct{}{},
		stats:     Stats{ByPath: map[string]int{}},
	}
	for i, t := range opts.Tokens {
		if !tokenIDRe.MatchString(t.ID) {
			return nil, fmt.Errorf("tokens[%d].id: %q is not USER@REALM!TOKENID", i, t.ID)
		}
		if t.Secret == "" {
			return nil, fmt.Errorf("tokens[%d].secret: must not be empty", i)
		}
		if _, dup := s.tokens[t.ID]; dup {
			return nil, fmt.Errorf("tokens[%d].id: %q given twice", i, t.ID)
		}
		s.tokens[t.ID] = t
	}
	if len(s.tokens) == 0 {
		return nil, errors.New("tokens: at least one API token is needed")
	}
	s.handlers = s.routes()
	return s, nil
}
