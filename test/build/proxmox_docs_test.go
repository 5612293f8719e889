package build

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pvelb/pvelb/test/pvesim/schema"
)

// pvelbCalls are the Proxmox API calls the pve client makes (provider/pve),
// with example path values.
var pvelbCalls = []struct{ method, path string }{
	{"GET", "/cluster/resources"},
	{"GET", "/nodes/pve1/qemu/100/config"},
	{"GET", "/nodes/pve1/qemu/100/status/current"},
	{"GET", "/nodes/pve1/qemu/100/agent/network-get-interfaces"},
	{"GET", "/nodes/pve1/qemu/100/firewall/options"},
	{"GET", "/nodes/pve1/qemu/100/firewall/ipset"},
	{"POST", "/nodes/pve1/qemu/100/firewall/ipset"},
	{"GET", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0"},
	{"POST", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0"},
	{"PUT", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0/192.0.2.1"},
	{"DELETE", "/nodes/pve1/qemu/100/firewall/ipset/ipfilter-net0/192.0.2.1"},
	{"GET", "/cluster/firewall/ipset"},
	{"POST", "/cluster/firewall/ipset"},
	{"GET", "/cluster/firewall/ipset/pvelb-vips"},
	{"POST", "/cluster/firewall/ipset/pvelb-vips"},
	{"PUT", "/cluster/firewall/ipset/pvelb-vips/192.0.2.1"},
	{"DELETE", "/cluster/firewall/ipset/pvelb-vips/192.0.2.1"},
}

var (
	roleAdd = regexp.MustCompile(`pveum role add (\S+) --privs "([^"]+)"`)
	aclLine = regexp.MustCompile(`pveum acl modify (\S+) --roles (\S+) --(users|tokens) (\S+)(.*)`)
)

// docRoles parses the `pveum role add` lines under each "PVE N:" heading of
// docs/proxmox-setup.md: version -> role -> privileges.
func docRoles(t *testing.T, doc string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	version := ""
	for _, line := range strings.Split(doc, "\n") {
		if v, ok := strings.CutSuffix(strings.TrimSpace(line), ":"); ok && (v == "PVE 9" || v == "PVE 8") {
			version = v
			out[v] = map[string][]string{}
			continue
		}
		if m := roleAdd.FindStringSubmatch(line); m != nil {
			if version == "" {
				t.Fatalf("role %s outside a PVE 8/PVE 9 section", m[1])
			}
			out[version][m[1]] = strings.Fields(m[2])
		}
	}
	return out
}

// TestProxmoxSetupDocMatchesSchema: the roles in docs/proxmox-setup.md give
// exactly the privileges the real Proxmox API schema checks for the calls
// pvelb makes, on PVE 9 and PVE 8, and the ACLs put each role on the path
// those checks name, for the user and the token alike.
func TestProxmoxSetupDocMatchesSchema(t *testing.T) {
	dir, err := schema.FindDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("Proxmox API schema not found (%v)", err)
	}
	data, err := os.ReadFile(filepath.Join(repo, "docs", "proxmox-setup.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	roles := docRoles(t, doc)
	acls := map[string]string{} // role -> path + flags, per subject kind
	for _, m := range aclLine.FindAllStringSubmatch(doc, -1) {
		acls[m[2]+" "+m[3]] = m[1] + strings.TrimSpace(m[5])
	}
	rolePath := map[string]string{"/vms/{vmid}": "PVELB-VM", "/": "PVELB-Cluster"}
	for _, kind := range []string{"users", "tokens"} {
		if got := acls["PVELB-VM "+kind]; got != "/vms" {
			t.Errorf("PVELB-VM for %s on %q, want /vms", kind, got)
		}
		if got := acls["PVELB-Cluster "+kind]; got != "/--propagate 0" {
			t.Errorf("PVELB-Cluster for %s on %q, want / with --propagate 0", kind, got)
		}
	}
	for version, file := range map[string]string{"PVE 9": schema.PVE9File, "PVE 8": schema.PVE8File} {
		s, err := schema.Load(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		docPrivs := roles[version]
		if len(docPrivs) == 0 {
			t.Errorf("%s: no roles in the doc", version)
			continue
		}
		used := map[string]bool{}
		for _, c := range pvelbCalls {
			m, _, err := s.Lookup(c.method, c.path)
			if err != nil {
				t.Fatalf("%s: %s %s: %v", version, c.method, c.path, err)
			}
			check := m.Permissions.Check
			if len(check) == 0 {
				if m.Permissions.User != "all" {
					t.Errorf("%s: %s %s: unexpected permission rule %+v", version, c.method, c.path, m.Permissions)
				}
				continue
			}
			path, _ := check[1].(string)
			role, ok := rolePath[path]
			if check[0] != "perm" || !ok {
				t.Errorf("%s: %s %s checks %v: no role in the doc covers it", version, c.method, c.path, check)
				continue
			}
			var need []string
			for _, p := range check[2].([]any) {
				need = append(need, p.(string))
			}
			anyOf := len(check) > 3 && check[3] == "any"
			have := docPrivs[role]
			var granted int
			for _, p := range need {
				if slices.Contains(have, p) {
					granted++
					used[p] = true
				}
			}
			if (anyOf && granted == 0) || (!anyOf && granted != len(need)) {
				t.Errorf("%s: %s %s needs %v (any=%t) on %s; role %s has %v", version, c.method, c.path, need, anyOf, path, role, have)
			}
		}
		for role, privs := range docPrivs {
			for _, p := range privs {
				if !used[p] {
					t.Errorf("%s: role %s grants %s, which no pvelb call needs", version, role, p)
				}
			}
		}
	}
}
