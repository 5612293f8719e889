// Package buildinfo holds the version and commit a pvelb binary was built
// from. The Makefile sets both with -ldflags -X (VERSION and COMMIT); a plain
// `go build` leaves Version "dev" and takes the commit Go recorded from the
// checkout, if any.
//
// pvelb-ccm deliberately does not set k8s.io/component-base/version's
// gitVersion: component-base derives the binary's Kubernetes version, and so
// its feature gates' emulation version, from it, and pvelb's own version
// (v0.x) would turn every gate off.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time: -X github.com/pvelb/pvelb/cmd/internal/buildinfo.Version=v0.1.0
// -X github.com/pvelb/pvelb/cmd/internal/buildinfo.Commit=<sha>.
var (
	Version = "dev"
	Commit  = ""
)

// Revision is Commit, or the VCS revision Go embedded when the linker set none
// ("unknown" when there is neither, as in a build outside a checkout).
func Revision() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String is the line `<program> --version` prints:
// "pvelb-ccm v0.1.0 (commit 0123abc, go1.26.0 linux/amd64)".
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", program, Version, Revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
