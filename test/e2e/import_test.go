package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/test/apiserver"
	"github.com/pvelb/pvelb/test/kubeapply"
)

// metallbCRDModule ships the MetalLB CRDs the import test installs. Not
// v0.15.2, which the side-by-side lab runs: its BGPPeer CRD declares the ASNs
// int32 with a maximum of 4294967295, and kube-apiserver 1.37 refuses every
// BGPPeer against it; v0.16 declares them int64.
const metallbCRDModule = "go.universe.tf/metallb@v0.16.2"

// TestImport runs `pvelbctl import metallb` and `pvelbctl import cilium`
// against a real apiserver holding each project's resources in its own
// schema: MetalLB's CRDs as its module ships them (metallbCRDModule), Cilium's as
// testdata/cilium-crds.yaml writes the part of them the import reads. The
// printed configuration is testdata/import/<source>.out.yaml; --apply
// writes the same objects, which pvelb's CRDs must accept, and a second
// --apply changes nothing.
func TestImport(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts kube-apiserver and etcd")
	}
	cp := apiserver.StartT(t, apiserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ap, err := kubeapply.New(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ApplyCRDs(t, cp)
	bin := Binary(t, "pvelbctl")
	pvelbctl := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", cp.Kubeconfig)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stdout.String() + stderr.String(), err
		}
		return stdout.String(), nil
	}

	// Before the CRDs are there: a clear refusal, not an empty import.
	if out, err := pvelbctl("import", "cilium"); err == nil || !strings.Contains(out, "are its CRDs installed?") {
		t.Errorf("import cilium without Cilium's CRDs: err %v, output %q", err, out)
	}

	applyMetalLBCRDs(ctx, t, ap, moduleDir(t, metallbCRDModule))
	applyCRDFile(ctx, t, ap, filepath.Join("testdata", "cilium-crds.yaml"))
	if _, err := cp.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	// Services the switch would not keep as they are: one address shared
	// across namespaces, one of another load balancer's class.
	for _, s := range []struct {
		ns, name, class string
		port            int32
	}{{"default", "shared-a", "", 80}, {"metallb-system", "shared-b", "", 443}, {"default", "cilium-class", "io.cilium/l2-announcer", 80}} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
				Ports: []corev1.ServicePort{{Port: s.port, Protocol: corev1.ProtocolTCP}}},
		}
		if s.class != "" {
			svc.Spec.LoadBalancerClass = &s.class
		}
		created, err := cp.Client().CoreV1().Services(s.ns).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.77"}}
		if _, err := cp.Client().CoreV1().Services(s.ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // creation timestamps have seconds: make the order plain
	}

	for _, source := range []string{"metallb", "cilium"} {
		t.Run(source, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "import", source+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := kubeapply.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := ap.Apply(ctx, objs, false); err != nil {
				t.Fatalf("the %s manifests do not fit its schema: %v", source, err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", "import", source+".out.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			out, err := pvelbctl("import", source, "-o", "yaml")
			if err != nil {
				t.Fatalf("pvelbctl import %s: %v\n%s", source, err, out)
			}
			if out != string(want) {
				t.Errorf("pvelbctl import %s printed:\n%s\nwant (testdata/import/%s.out.yaml):\n%s\nfirst difference: %s", source, out, source, want, firstDiff(out, string(want)))
			}
			printed, err := kubeapply.Decode([]byte(out))
			if err != nil {
				t.Fatal(err)
			}

			applied, err := pvelbctl("import", source, "--apply")
			if err != nil {
				t.Fatalf("pvelbctl import %s --apply: %v\n%s", source, err, applied)
			}
			var versions []string
			for _, p := range printed {
				gvr := ippoolGVR
				if p.GetKind() == "BGPPeer" {
					gvr = bgppeerGVR
				}
				if !strings.Contains(applied, gvr.Resource+".pvelb.io/"+p.GetName()+" applied") {
					t.Errorf("--apply output does not say %s %s was applied:\n%s", p.GetKind(), p.GetName(), applied)
				}
				got, err := dyn.Resource(gvr).Get(ctx, p.GetName(), metav1.GetOptions{})
				if err != nil {
					t.Errorf("%s %s not in the cluster after --apply: %v", p.GetKind(), p.GetName(), err)
					continue
				}
				versions = append(versions, got.GetResourceVersion())
				if !specContains(got.Object["spec"], p.Object["spec"]) {
					t.Errorf("%s %s in the cluster:\n%s\ndoes not hold what was printed:\n%s", p.GetKind(), p.GetName(), toYAML(got.Object["spec"]), toYAML(p.Object["spec"]))
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if strings.HasPrefix(line, "# ") && !strings.Contains(applied, line) {
					t.Errorf("--apply does not say %q", line)
				}
			}

			if again, err := pvelbctl("import", source, "--apply"); err != nil {
				t.Fatalf("second --apply: %v\n%s", err, again)
			}
			var after []string
			for _, p := range printed {
				gvr := ippoolGVR
				if p.GetKind() == "BGPPeer" {
					gvr = bgppeerGVR
				}
				got, err := dyn.Resource(gvr).Get(ctx, p.GetName(), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				after = append(after, got.GetResourceVersion())
			}
			if !slices.Equal(versions, after) {
				t.Errorf("a second --apply rewrote objects: resourceVersions %v, then %v", versions, after)
			}
		})
	}
}

// specContains reports whether got holds every field of want with the same
// value (got may hold more: the CRDs' defaults).
func specContains(got, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !specContains(g[k], v) {
				return false
			}
		}
		return true
	default:
		return toYAML(got) == toYAML(want)
	}
}

func toYAML(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

// firstDiff names the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, gl, wl)
		}
	}
	return "none"
}
