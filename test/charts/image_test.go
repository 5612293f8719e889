package charts

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/pvelb/pvelb/test/kubeapply"
)

// workloadImages lists "Kind/name=image" for every container of the
// Deployments and DaemonSets in objs, sorted.
func workloadImages(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			img, _, _ := unstructured.NestedString(c.(map[string]any), "image")
			out = append(out, o.GetKind()+"/"+o.GetName()+"="+img)
		}
	}
	slices.Sort(out)
	return out
}

// TestOneImage: `kubectl apply -k manifests/` (what a release renders into
// pvelb.yaml for the Talos patch) and the chart's defaults run the same
// image, whose tag is the chart's appVersion, the release tag. Each sets it
// in one place: kustomization.yaml's images and the chart's image values.
func TestOneImage(t *testing.T) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "../../manifests")
	if err != nil {
		t.Fatalf("kustomize build manifests/: %v", err)
	}
	rendered, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	kobjs, err := kubeapply.Decode(rendered)
	if err != nil {
		t.Fatal(err)
	}
	c := loadChart(t)
	if v := c.Metadata.AppVersion; !strings.HasPrefix(v, "v") || strings.TrimPrefix(v, "v") != c.Metadata.Version {
		t.Errorf("chart appVersion %q, version %q: the image tag is the release tag, v<chart version>", v, c.Metadata.Version)
	}
	want := "ghcr.io/pvelb/pvelb:" + c.Metadata.AppVersion
	kust := workloadImages(kobjs)
	if len(kust) != 2 {
		t.Fatalf("kustomize build renders %v, want the Deployment's and the DaemonSet's image", kust)
	}
	for _, img := range kust {
		if !strings.HasSuffix(img, "="+want) {
			t.Errorf("kustomize build manifests/: %s, want %s", img, want)
		}
	}
	objs, err := render(t, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := workloadImages(objs); !slices.Equal(got, kust) {
		t.Errorf("chart defaults run %v, kustomize build manifests/ %v", got, kust)
	}
}
