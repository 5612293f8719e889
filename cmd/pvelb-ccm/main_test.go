package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"k8s.io/cloud-provider/names"

	"github.com/pvelb/pvelb/cmd/internal/buildinfo"
)

// TestVersion: --version prints pvelb's version and commit (set by the
// Makefile's ldflags), not component-base's Kubernetes version.
func TestVersion(t *testing.T) {
	oldV, oldC := buildinfo.Version, buildinfo.Commit
	t.Cleanup(func() { buildinfo.Version, buildinfo.Commit = oldV, oldC })
	buildinfo.Version, buildinfo.Commit = "v9.8.7", "feedc0de"
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "pvelb-ccm v9.8.7 (commit feedc0de,") {
		t.Errorf("--version printed %q", got)
	}
}

func TestCommandDefaults(t *testing.T) {
	cmd := newCommand()
	if cmd.Use != "pvelb-ccm" {
		t.Errorf("Use = %q", cmd.Use)
	}
	for flag, want := range map[string]string{
		"cloud-provider":             "proxmox",
		"leader-elect-resource-name": "pvelb-cloud-controller-manager",
		"leader-elect":               "true",
		"cloud-config":               "",
		"secure-port":                "10258",
		"leader-elect-resource-lock": "leases",
		"kube-api-qps":               "50",
		"kube-api-burst":             "100",
	} {
		f := cmd.Flags().Lookup(flag)
		if f == nil {
			t.Errorf("flag --%s missing", flag)
			continue
		}
		if f.DefValue != want {
			t.Errorf("--%s default = %q, want %q", flag, f.DefValue, want)
		}
	}
	// klog flags from component-base are there.
	if cmd.Flags().Lookup("v") == nil || cmd.Flags().Lookup("logging-format") == nil {
		t.Error("logging flags (-v, --logging-format) missing")
	}
	usage := cmd.Flags().Lookup("controllers").Usage
	for _, c := range []string{names.CloudNodeController, names.CloudNodeLifecycleController, names.ServiceLBController} {
		if !strings.Contains(usage, c) {
			t.Errorf("--controllers does not offer %s: %s", c, usage)
		}
	}
}

func TestControllers(t *testing.T) {
	var got []string
	for name := range controllers() {
		got = append(got, name)
	}
	slices.Sort(got)
	want := []string{names.CloudNodeController, names.CloudNodeLifecycleController, names.ServiceLBController}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("controllers = %v, want %v", got, want)
	}
}
