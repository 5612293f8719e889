package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// firewall is one .fw file: the cluster's (key 0) or one VM's.
type firewall struct {
	options map[string]string // canonical strings, booleans "0"/"1"
	ipsets  map[string]*ipset
	rules   []Rule
}

const clusterKey = 0

// firewallLocked returns the firewall of a key, creating an empty one, as
// reading a missing .fw file yields an empty config.
func (s *Server) firewallLocked(key int) *firewall {
	fw := s.firewalls[key]
	if fw == nil {
		fw = &firewall{options: map[string]string{}, ipsets: map[string]*ipset{}}
		s.firewalls[key] = fw
	}
	return fw
}

func lockName(key int) string {
	if key == clusterKey {
		return "firewall-cluster"
	}
	return "firewall-vm-" + strconv.Itoa(key)
}

// withLock runs a firewall write under the scope's cfs lock: writes to one
// scope serialise, writes to different VMs run in parallel. fn runs after
// WriteLatency, with s.mu held, so it sees and changes a consistent state.
func (s *Server) withLock(r *request, key int, fn func(fw *firewall) error) error {
	s.mu.Lock()
	lock := s.locks[key]
	if lock == nil {
		lock = make(chan struct{}, 1)
		s.locks[key] = lock
	}
	s.mu.Unlock()

	timer := time.NewTimer(s.opts.LockTimeout)
	defer timer.Stop()
	select {
	case lock <- struct{}{}:
	case <-timer.C:
		return fail(http.StatusInternalServerError, "cfs-lock '%s' error: got lock request timeout", lockName(key))
	case <-r.ctx.Context().Done():
		return fail(http.StatusInternalServerError, "cfs-lock '%s' error: request aborted", lockName(key))
	}
	defer func() { <-lock }()
	if s.lockHook != nil {
		s.lockHook(key)
	}
	if d := s.opts.WriteLatency; d > 0 {
		time.Sleep(d) // the rewrite of the .fw file; not cut short, like a real one
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(s.firewallLocked(key))
}

// optionsDigest is copy_opject_with_digest: SHA1 over the sorted options as
// "key:value\n".
func optionsDigest(opts map[string]string) string {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha1.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s:%s\n", k, opts[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

var booleanOptions = map[string]bool{"enable": true, "ipfilter": true, "macfilter": true, "ndp": true, "dhcp": true, "radv": true}

func (s *Server) getFirewallOptions(r *request) (any, error) {
	key, _ := strconv.Atoi(r.params["vmid"])
	s.mu.Lock()
	defer s.mu.Unlock()
	opts := s.firewallLocked(key).options
	res := map[string]any{"digest": optionsDigest(opts)}
	for k, v := range opts {
		if booleanOptions[k] {
			n, _ := strconv.Atoi(v)
			res[k] = n
		} else {
			res[k] = v
		}
	}
	return res, nil
}

func (s *Server) putFirewallOptions(r *request) (any, error) {
	key, _ := strconv.Atoi(r.params["vmid"])
	return nil, s.withLock(r, key, func(fw *firewall) error {
		if err := checkDigest(optionsDigest(fw.options), r.params["digest"]); err != nil {
			return err
		}
		for _, k := range strings.FieldsFunc(r.params["delete"], func(c rune) bool { return c == ',' || c == ';' || c == ' ' }) {
			if r.method.Params[k] == nil || k == "node" || k == "vmid" || k == "digest" || k == "delete" {
				return paramError(map[string]string{"delete": fmt.Sprintf("unknown option '%s'", k)})
			}
			delete(fw.options, k)
		}
		for k, v := range r.params {
			switch k {
			case "node", "vmid", "digest", "delete":
				continue
			}
			fw.options[k] = v
		}
		return nil
	})
}

// checkDigest is PVE::Tools::assert_if_modified.
func checkDigest(current, given string) error {
	if given != "" && given != current {
		return fail(http.StatusInternalServerError, "detected modified configuration - file changed by other user? Try again.")
	}
	return nil
}

// SetFirewallOptions sets a VM's firewall enable and ipfilter options, as
// an administrator would.
func (s *Server) SetFirewallOptions(vmid int, enable, ipfilter bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.firewallLocked(vmid)
	fw.options["enable"] = strconv.Itoa(b2i(enable))
	fw.options["ipfilter"] = strconv.Itoa(b2i(ipfilter))
}

// FirewallOptions returns a copy of a VM's firewall options (for assertions).
func (s *Server) FirewallOptions(vmid int) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	if fw := s.firewalls[vmid]; fw != nil {
		for k, v := range fw.options {
			out[k] = v
		}
	}
	return out
}
