package e2e

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/test/apiserver"
)

// TestCRDAdmission applies every document under
// loadbalancer/api/v1alpha1/testdata to the real apiserver: the valid ones
// must be accepted, each invalid one refused with the message its
// `# expect:` line names. This is the proof that nonsense pools never reach
// the allocator.
func TestCRDAdmission(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	cp := apiserver.StartT(t, apiserver.Options{})
	ApplyCRDs(t, cp)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	root, err := apiserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "loadbalancer", "api", "v1alpha1", "testdata")
	resources := map[string]string{"IPPool": "ippools", "BGPPeer": "bgppeers", "ServiceAnnouncement": "serviceannouncements"}

	for _, kind := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, kind, "*.yaml"))
		if len(files) == 0 {
			t.Fatalf("no test documents in %s/%s", dir, kind)
		}
		for _, f := range files {
			t.Run(kind+"/"+filepath.Base(f), func(t *testing.T) {
				obj := readObject(t, f)
				res, ok := resources[obj.GetKind()]
				if !ok {
					t.Fatalf("unexpected kind %q", obj.GetKind())
				}
				gvr := schema.GroupVersionResource{Group: "pvelb.io", Version: "v1alpha1", Resource: res}
				// Namespaced kinds (ServiceAnnouncement) name their namespace.
				_, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(context.Background(), obj, metav1.CreateOptions{})
				if kind == "valid" {
					if err != nil {
						t.Fatalf("valid document refused: %v", err)
					}
					return
				}
				want := expectLine(t, f)
				if err == nil {
					t.Fatalf("invalid document accepted (want error containing %q)", want)
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not contain %q", err, want)
				}
			})
		}
	}
}

func expectLine(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "# expect:"); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("%s has no `# expect:` line", path)
	return ""
}
