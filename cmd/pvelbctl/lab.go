package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/pvelb/pvelb/cmd/pvelbctl/internal/lab"
	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/pvesim"
)

func runLab(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("pvelbctl lab", pflag.ContinueOnError)
	o := lab.Options{Out: stdout}
	var noFailover bool
	fs.IntVar(&o.Nodes, "nodes", 3, "Kubernetes nodes (Proxmox VMs, two thirds on pve1, the rest on pve2), 2..8")
	fs.BoolVar(&noFailover, "no-failover", false, "skip the failover step")
	fs.BoolVar(&o.KeepGoing, "keep-going", false, "when a demo check fails, keep the lab running for inspection")
	fs.BoolVar(&o.ExitAfterDemo, "exit-after-demo", false, "tear down right after the scripted part instead of waiting for Ctrl-C")
	fs.StringVar(&o.StateDir, "state-dir", "", "directory for kubeconfigs, certificates and logs (kept); default a temporary one, removed at the end")
	fs.StringVar(&o.BinDir, "bin-dir", defaultBinDir(), "directory holding kube-apiserver, etcd, pvelb-ccm and pvelb-announcer (make kube-bins build)")
	fs.StringVar(&o.RepoDir, "repo-dir", "", "pvelb checkout, for manifests/crds (default: found from --bin-dir or the working directory)")
	fs.StringVar(&o.SchemaFile, "pve-schema", "", "Proxmox API schema for the simulator (default: shared/pve-api/apidata-pve9.1.3.js beside the checkout)")
	fs.IntVar(&o.HostAPIPort, "api-port", 0, "loopback port the apiserver is forwarded to for kubectl on the host (default 6443, or any free port)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	o.Failover = !noFailover
	if o.RepoDir == "" {
		o.RepoDir = findRepo(o.BinDir)
	}
	if o.SchemaFile == "" {
		o.SchemaFile = findSchema(o.RepoDir)
	}
	return lab.Run(ctx, o)
}

// defaultBinDir is the directory pvelbctl itself lives in (make puts every
// binary in bin/), else ./bin.
func defaultBinDir() string {
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			return filepath.Dir(exe)
		}
	}
	return "bin"
}

func isRepo(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	return err == nil && strings.HasPrefix(string(b), "module github.com/pvelb/pvelb\n")
}

func findRepo(binDir string) string {
	if abs, err := filepath.Abs(filepath.Join(binDir, "..")); err == nil && isRepo(abs) {
		return abs
	}
	if root, err := apiserver.RepoRoot(); err == nil {
		return root
	}
	return ""
}

func findSchema(repo string) string {
	if f, err := pvesim.DefaultSchemaFile(); err == nil {
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	if repo != "" {
		f := filepath.Join(repo, "..", "shared", "pve-api", "apidata-pve9.1.3.js")
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	return ""
}
