package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// EnvRequirePrivileged, when "1" (CI and `make test` set it), turns a missing
// privilege into a test failure: the network tests must never pass by skipping
// where they are expected to run.
const EnvRequirePrivileged = "PVELB_REQUIRE_PRIVILEGED"

var (
	probeOnce sync.Once
	probeErr  error
)

// Available reports why network-namespace labs cannot run here (nil when
// they can): not root, no `ip`, or namespaces refused by the kernel.
func Available() error {
	probeOnce.Do(func() { probeErr = probe() })
	return probeErr
}

func probe() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("network-namespace tests need root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("network-namespace tests need iproute2's `ip`: %w", err)
	}
	name := fmt.Sprintf("%s%d-probe", Prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace: %v: %s", err, out)
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
	return nil
}

// RequirePrivileged skips the test when namespaces are unavailable, or fails
// it when EnvRequirePrivileged=1. Every test or benchmark that builds a lab
// calls it first (New does).
func RequirePrivileged(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv(EnvRequirePrivileged) == "1" {
		t.Fatalf("%v (%s=1 requires privileged tests to run)", err, EnvRequirePrivileged)
	}
	t.Skipf("%v (set %s=1 to make this a failure)", err, EnvRequirePrivileged)
}

// RequireTools is like RequirePrivileged for external programs a test uses
// (ping, arping, nft): missing ones skip, or fail under EnvRequirePrivileged=1.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			msg := fmt.Sprintf("this test needs %q (.ci/run names the Debian packages the tests use): %v", n, err)
			if os.Getenv(EnvRequirePrivileged) == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}
