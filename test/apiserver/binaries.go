package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// RepoRoot finds the pvelb checkout by walking up from the working directory
// to the go.mod of module github.com/pvelb/pvelb.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/pvelb/pvelb\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("pvelb repository root not found above the working directory")
		}
		dir = parent
	}
}

// binaries maps each binary to the package the tools module builds it from.
var binaries = map[string]string{
	"kube-apiserver":          "k8s.io/kubernetes/cmd/kube-apiserver",
	"etcd":                    "go.etcd.io/etcd/server/v3",
	"kube-proxy":              "k8s.io/kubernetes/cmd/kube-proxy",
	"kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
}

// controlPlaneBinaries are what every control plane needs. kube-proxy and
// kube-controller-manager are built only for the labs that ask for them, so
// a test that needs just an apiserver never waits for their cold build.
var controlPlaneBinaries = []string{"kube-apiserver", "etcd"}

// EnsureBinaries returns the directory holding kube-apiserver and etcd
// (env PVELB_KUBE_BIN_DIR, else <repo>/bin) and builds whichever is missing
// from test/tools, together with the extra binaries named (kube-proxy,
// kube-controller-manager). A file lock keeps parallel test packages from
// building the same binary at once; the first build takes minutes, later ones
// come from the Go build cache. With PVELB_KUBE_BIN_DIR set nothing is built:
// `make kube-bins` put every binary there.
func EnsureBinaries(ctx context.Context, log io.Writer, extra ...string) (string, error) {
	names := append(append([]string{}, controlPlaneBinaries...), extra...)
	for _, name := range names {
		if _, ok := binaries[name]; !ok {
			return "", fmt.Errorf("no build recipe for binary %q", name)
		}
	}
	if dir := os.Getenv("PVELB_KUBE_BIN_DIR"); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".kube-bins.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()

	for _, name := range names {
		pkg := binaries[name]
		out := filepath.Join(dir, name)
		if _, err := os.Stat(out); err == nil {
			continue
		}
		if log != nil {
			_, _ = fmt.Fprintf(log, "building %s from %s (minutes on a cold build cache)\n", name, pkg)
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = filepath.Join(root, "test", "tools")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building %s: %w\n%s", name, err, b)
		}
	}
	return dir, nil
}
