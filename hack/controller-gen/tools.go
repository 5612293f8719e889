//go:build tools

// Package tools pins controller-gen so `go run` / `go build` in this module use
// an exact version.
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
