package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
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

// fakeSpeaker is an executable file standing in for pvelb-bgp-speaker
// (bgpConfig only checks that it is there).
func fakeSpeaker(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "pvelb-bgp-speaker")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBGPFlagDefaults(t *testing.T) {
	speaker := fakeSpeaker(t)
	o, err := parse(t, "--node-name=n1", "--membership-secret-file=/x", "--bgp-speaker-binary="+speaker, "--v=3")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	c, err := o.bgpConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.SpeakerBinary != speaker || strings.Join(c.SpeakerArgs, " ") != "-v=3" {
		t.Errorf("speaker %s %v, want %s -v=3", c.SpeakerBinary, c.SpeakerArgs, speaker)
	}
	if c.ListenPort != desired.NoListen {
		t.Errorf("default listen port %d: the announcer must not listen for BGP unless asked", c.ListenPort)
	}
	if c.RouterID.IsValid() {
		t.Errorf("default router ID %s: must be unset so the node's InternalIP is used", c.RouterID)
	}
	if c.LocalASN != 64512 || c.ConnectRetry != desired.DefaultConnectRetry {
		t.Errorf("defaults %+v", c)
	}
	o, _ = parse(t, "--node-name=n1", "--membership-secret-file=/x", "--bgp-router-id=192.0.2.9", "--bgp-listen-port=1790", "--bgp-speaker-binary="+speaker)
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if c, err := o.bgpConfig(); err != nil || c.RouterID.String() != "192.0.2.9" || c.ListenPort != 1790 {
		t.Errorf("flags not applied: %+v %v", c, err)
	}
}

// TestSpeakerBinaryMissing: an image without pvelb-bgp-speaker fails at
// start with an error naming the flag and the path, not when the first
// BGPPeer appears.
func TestSpeakerBinaryMissing(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ arg, want string }{
		{"", filepath.Join(filepath.Dir(self), "pvelb-bgp-speaker")},
		{"--bgp-speaker-binary=" + filepath.Join(t.TempDir(), "nope"), "nope"},
		{"--bgp-speaker-binary=" + t.TempDir(), "not an executable file"},
	} {
		args := []string{"--node-name=n1", "--membership-secret-file=/x"}
		if tt.arg != "" {
			args = append(args, tt.arg)
		}
		o, err := parse(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.bgpConfig()
		if err == nil || !strings.Contains(err.Error(), "--bgp-speaker-binary") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one naming --bgp-speaker-binary and %s", tt.arg, err, tt.want)
		}
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
		{"--resync-period=0s", "--resync-period"},
		{"--resync-period=-1s", "--resync-period"},
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
