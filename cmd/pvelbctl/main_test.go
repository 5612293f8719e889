package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{nil, 2, "Usage:"},
		{[]string{"--help"}, 0, "pvelbctl lab"},
		{[]string{"--version"}, 0, "pvelbctl dev (commit "},
		{[]string{"version"}, 0, "pvelbctl dev (commit "},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"lab", "--no-such-flag"}, 2, "unknown flag: --no-such-flag"},
		{[]string{"lab", "--help"}, 0, "--exit-after-demo"},
		{[]string{"lab", "extra"}, 2, "unexpected arguments"},
		{[]string{"doctor"}, 2, "--cloud-config: required"},
		{[]string{"doctor", "--cloud-config", "/nonexistent/cloud.yaml"}, 1, "--cloud-config"},
		{[]string{"status", "--kubeconfig", "/nonexistent/kubeconfig"}, 2, "/nonexistent/kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errOut)
			all := out.String() + errOut.String()
			if code != tt.code || !strings.Contains(all, tt.contains) {
				t.Errorf("exit %d, output %q; want exit %d containing %q", code, all, tt.code, tt.contains)
			}
		})
	}
}
