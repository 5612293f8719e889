package main

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/cloud-provider/names"
)

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
