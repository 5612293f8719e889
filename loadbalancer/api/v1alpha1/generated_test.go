package v1alpha1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedFilesAreCurrent regenerates the CRDs and DeepCopy code into a
// temporary directory and fails if the committed files differ, so a type
// change without hack/generate.sh cannot land. It builds controller-gen from
// hack/controller-gen (about 40 s the first time, cached after), hence -short
// skips it.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen; run without -short")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "controller-gen")
	build := exec.Command("go", "build", "-o", bin, "sigs.k8s.io/controller-tools/cmd/controller-gen")
	build.Dir = filepath.Join(root, "hack", "controller-gen")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building controller-gen: %v\n%s", err, out)
	}
	crdDir, objDir := filepath.Join(tmp, "crds"), filepath.Join(tmp, "object")
	for _, args := range [][]string{
		{"object:headerFile=hack/boilerplate.go.txt", "paths=./loadbalancer/api/...", "output:object:dir=" + objDir},
		{"crd:crdVersions=v1", "paths=./loadbalancer/api/...", "output:crd:dir=" + crdDir},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen %v: %v\n%s", args, err, out)
		}
	}
	compare := func(generated, committed string) {
		t.Helper()
		want, err := os.ReadFile(generated)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(committed)
		if err != nil {
			t.Fatalf("%v (run hack/generate.sh)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run hack/generate.sh and commit the result", committed)
		}
	}
	compare(filepath.Join(objDir, "zz_generated.deepcopy.go"), "zz_generated.deepcopy.go")
	crds, _ := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if len(crds) != 3 {
		t.Fatalf("generated %d CRDs, want 3 (IPPool, BGPPeer, ServiceAnnouncement)", len(crds))
	}
	for _, f := range crds {
		compare(f, filepath.Join(root, "manifests", "crds", filepath.Base(f)))
	}
}

// TestSchemeRegistersKinds checks AddToScheme knows every kind under pvelb.io/v1alpha1.
func TestSchemeRegistersKinds(t *testing.T) {
	s := runtimeScheme(t)
	for _, kind := range []string{"IPPool", "IPPoolList", "BGPPeer", "BGPPeerList", "ServiceAnnouncement", "ServiceAnnouncementList"} {
		if !s.Recognizes(SchemeGroupVersion.WithKind(kind)) {
			t.Errorf("scheme does not recognise %s", kind)
		}
	}
}
