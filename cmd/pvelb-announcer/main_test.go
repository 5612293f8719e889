package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/pvelb/pvelb/announcer/bgp"
)

func parse(t *testing.T, args ...string) (*options, error) {
	t.Helper()
	o := &options{}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	for _, f := range o.flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return o, nil
}

func TestBGPFlagDefaults(t *testing.T) {
	o, err := parse(t, "--node-name=n1", "--membership-secret-file=/x")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	c := o.bgpConfig()
	if c.ListenPort != bgp.NoListen {
		t.Errorf("default listen port %d: the announcer must not listen for BGP unless asked", c.ListenPort)
	}
	if c.RouterID.IsValid() {
		t.Errorf("default router ID %s: must be unset so the node's InternalIP is used", c.RouterID)
	}
	if c.LocalASN != 64512 || c.ConnectRetry != bgp.DefaultConnectRetry {
		t.Errorf("defaults %+v", c)
	}
	o, _ = parse(t, "--node-name=n1", "--membership-secret-file=/x", "--bgp-router-id=192.0.2.9", "--bgp-listen-port=1790")
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if c := o.bgpConfig(); c.RouterID.String() != "192.0.2.9" || c.ListenPort != 1790 {
		t.Errorf("flags not applied: %+v", c)
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for _, tt := range []struct {
		arg, flag string
	}{
		{"--bgp-listen-port=0", "--bgp-listen-port"},
		{"--bgp-listen-port=70000", "--bgp-listen-port"},
		{"--bgp-router-id=2001:db8::1", "--bgp-router-id"},
		{"--bgp-router-id=0.0.0.0", "--bgp-router-id"},
		{"--bgp-local-asn=0", "--bgp-local-asn"},
		{"--bgp-connect-retry=10ms", "--bgp-connect-retry"},
	} {
		o, err := parse(t, "--node-name=n1", "--membership-secret-file=/x", tt.arg)
		if err != nil {
			t.Fatalf("%s: %v", tt.arg, err)
		}
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("%s: error %v, want one naming %s", tt.arg, err, tt.flag)
		}
	}
}

// TestManifestFlagsExist: every flag the DaemonSet manifest and the Helm
// chart pass to pvelb-announcer is one it knows (a typo would crash-loop
// every node's announcer).
func TestManifestFlagsExist(t *testing.T) {
	o := &options{}
	known := map[string]bool{}
	for _, fs := range o.flags().FlagSets {
		fs.VisitAll(func(f *pflag.Flag) { known[f.Name] = true })
	}
	argRE := regexp.MustCompile(`(?m)^\s*- --([a-z0-9-]+)(=|$)`)
	for _, rel := range []string{"manifests/announcer.yaml", "manifests/charts/pvelb/templates/announcer-daemonset.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", rel))
		if err != nil {
			t.Fatal(err)
		}
		found := argRE.FindAllStringSubmatch(string(b), -1)
		if len(found) < 4 {
			t.Fatalf("%s: found only %d args; has the layout changed?", rel, len(found))
		}
		var names []string
		for _, m := range found {
			names = append(names, m[1])
			if !known[m[1]] {
				t.Errorf("%s passes --%s, which pvelb-announcer does not know", rel, m[1])
			}
		}
		for _, want := range []string{"bgp-listen-port", "membership-secret-file"} {
			if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
				t.Errorf("%s does not set --%s", rel, want)
			}
		}
	}
}
