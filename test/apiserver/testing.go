package apiserver

import (
	"context"
	"testing"
)

// StartT starts a control plane for one test and stops it in t.Cleanup, also
// when the test fails. A control plane that cannot start fails the test: a
// test that needs the real apiserver never passes without one.
func StartT(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	cp, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(cp.Stop)
	return cp
}
