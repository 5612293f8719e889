package build

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// toolPackages maps the programs pvelb's tests and lab run to the Debian
// package that provides them.
var toolPackages = map[string]string{
	"ip":     "iproute2",
	"ss":     "iproute2",
	"ping":   "iputils-ping",
	"arping": "iputils-arping",
	"sysctl": "procps",
	"curl":   "curl",
	"bird":   "bird2",
	"birdc":  "bird2",
	"nft":    "nftables",
	// kube-proxy runs iptables, iptables-restore and iptables-save (and the
	// ip6tables ones) in the data-path labs; the tests name these.
	"iptables":       "iptables",
	"ip6tables":      "iptables",
	"iptables-save":  "iptables",
	"ip6tables-save": "iptables",
}

// labTestOnly lists programs netlab runs only for tests, never for the demo
// lab, with the netlab methods that run them: the demo need not install them
// while its code calls none of those methods.
var labTestOnly = map[string][]string{
	"nft": {".DropUDP(", ".Heal("},
}

// mentions reports whether a Go file under dir (relative to the repository)
// contains one of words.
func mentions(t *testing.T, dir string, words []string) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(filepath.Join(repo, dir), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, w := range words {
			found = found || strings.Contains(string(b), w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// usedTools lists the programs of toolPackages named as string literals in
// the Go files under dirs (relative to the repository).
func usedTools(t *testing.T, dirs ...string) []string {
	t.Helper()
	var used []string
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(repo, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && e.Name() == "tools" && filepath.Base(filepath.Dir(p)) == "test" {
				return filepath.SkipDir // the Kubernetes tools module
			}
			if e.IsDir() || !strings.HasSuffix(p, ".go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for tool := range toolPackages {
				if strings.Contains(string(b), `"`+tool+`"`) && !slices.Contains(used, tool) {
					used = append(used, tool)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return used
}

// TestCIInstallsTestTools: .ci/run runs on a fresh Debian machine, so every
// program the tests run must come from a package it installs (a minimal
// Debian has no procps, so no sysctl, for example).
func TestCIInstallsTestTools(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo, ".ci/run"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^packages=\(([^)]*)\)`).FindSubmatch(data)
	if m == nil {
		t.Fatal(".ci/run: no packages=(...) list")
	}
	installed := strings.Fields(string(m[1]))
	used := usedTools(t, "test", "announcer", "cmd", "loadbalancer", "provider")
	if !slices.Contains(used, "sysctl") || !slices.Contains(used, "ip") {
		t.Fatalf("found only %v: the scan no longer sees the tests' commands", used)
	}
	for _, tool := range used {
		if !slices.Contains(installed, toolPackages[tool]) {
			t.Errorf("the tests run %s, but .ci/run does not install %s (it installs %v)", tool, toolPackages[tool], installed)
		}
	}
}

// TestDemoInstallsLabTools: `make demo` installs what the lab runs
// (DEMO_TOOLS in the Makefile, program:package pairs).
func TestDemoInstallsLabTools(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^DEMO_TOOLS\s*:?=(.*)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("Makefile: no DEMO_TOOLS")
	}
	demo := map[string]string{}
	for _, f := range strings.Fields(string(m[1])) {
		prog, pkg, _ := strings.Cut(f, ":")
		demo[prog] = pkg
	}
	used := usedTools(t, "test/netlab", "test/apiserver", "cmd/pvelbctl/internal/lab")
	// The lab runs the emulated Proxmox firewall and the data path (kube-proxy)
	// whole: whatever their code runs, the demo runs, also a tool netlab
	// runs only for tests.
	whole := usedTools(t, "test/pvefw", "test/datapath")
	if !slices.Contains(whole, "nft") || !slices.Contains(whole, "iptables") {
		t.Fatalf("found only %v in test/pvefw and test/datapath: the scan no longer sees the tools they run", whole)
	}
	for _, tool := range whole {
		if !slices.Contains(used, tool) {
			used = append(used, tool)
		}
	}
	for _, tool := range used {
		if calls, ok := labTestOnly[tool]; ok && !slices.Contains(whole, tool) && !mentions(t, "cmd/pvelbctl/internal/lab", calls) {
			continue
		}
		if demo[tool] != toolPackages[tool] {
			t.Errorf("the demo lab runs %s, but DEMO_TOOLS does not install %s", tool, toolPackages[tool])
		}
	}
}
