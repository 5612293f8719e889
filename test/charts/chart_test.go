// Package charts tests pvelb's Helm chart with Helm's own Go library: it is
// linted and rendered exactly as `helm lint` and `helm template` would, and
// the rendered objects are applied with server-side dry-run to a real
// kube-apiserver, so schema errors and admission failures are caught. It is a
// separate module because Helm brings dependencies the product does not need.
package charts

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/test/kubeapply"
)

const (
	chartDir  = "../../manifests/charts/pvelb"
	namespace = "pvelb-system"
)

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return c
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	if file == "" {
		return map[string]any{}
	}
	vals, err := chartutil.ReadValuesFile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return vals
}

// render runs the install action client-only, which is `helm template`.
func render(t *testing.T, c *chart.Chart, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	inst := action.NewInstall(&action.Configuration{Log: t.Logf})
	inst.ReleaseName = "pvelb"
	inst.Namespace = namespace
	inst.ClientOnly = true
	inst.DryRun = true
	inst.Replace = true
	kv, err := chartutil.ParseKubeVersion("v1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	inst.KubeVersion = kv
	rel, err := inst.Run(c, vals)
	if err != nil {
		return nil, err
	}
	objs, err := kubeapply.Decode([]byte(rel.Manifest))
	if err != nil {
		t.Fatalf("rendered manifest: %v", err)
	}
	if !strings.Contains(rel.Info.Notes, "pvelb") {
		t.Errorf("NOTES.txt did not render: %q", rel.Info.Notes)
	}
	return objs, nil
}

type valuesCase struct {
	name, file string
}

func valuesCases(t *testing.T) []valuesCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("want example values in ci/, got %v (%v)", files, err)
	}
	out := []valuesCase{{name: "default"}}
	for _, f := range files {
		out = append(out, valuesCase{name: strings.TrimSuffix(filepath.Base(f), ".yaml"), file: f})
	}
	return out
}

func TestLint(t *testing.T) {
	for _, vc := range valuesCases(t) {
		t.Run(vc.name, func(t *testing.T) {
			res := action.NewLint().Run([]string{chartDir}, readValues(t, vc.file))
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint: %v", err)
			}
		})
	}
}

func count(objs []*unstructured.Unstructured, kind string) int {
	n := 0
	for _, u := range objs {
		if u.GetKind() == kind {
			n++
		}
	}
	return n
}

func TestRenderDefaults(t *testing.T) {
	objs, err := render(t, loadChart(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := kubeapply.Typed[appsv1.Deployment](t, objs, "Deployment", "pvelb-ccm")
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", *d.Spec.Replicas)
	}
	if kubeapply.Find(objs, "Secret", "pvelb-cloud-config") != nil {
		t.Error("without proxmox.clusters the cloud config Secret is the user's, not the chart's")
	}
	ds := kubeapply.Typed[appsv1.DaemonSet](t, objs, "DaemonSet", "pvelb-announcer")
	env := map[string]string{}
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["KUBERNETES_SERVICE_HOST"] != "localhost" || env["KUBERNETES_SERVICE_PORT"] != "7445" {
		t.Errorf("KubePrism is on by default: env = %v", env)
	}
	sec := kubeapply.Typed[corev1.Secret](t, objs, "Secret", "pvelb-announcer-membership")
	if len(sec.Data["secret"]) < 32 {
		t.Errorf("membership key too short: %d bytes", len(sec.Data["secret"]))
	}
	// Like the plain manifests: get on the one default password Secret, by name.
	role := kubeapply.Typed[rbacv1.Role](t, objs, "Role", "pvelb-announcer:bgp-passwords")
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].ResourceNames, []string{"pvelb-bgp-passwords"}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"get"}) {
		t.Errorf("announcer Secret access = %+v, want get on pvelb-bgp-passwords only", role.Rules)
	}
	if n := count(objs, "IPPool") + count(objs, "BGPPeer"); n != 0 {
		t.Errorf("default values create %d pools/peers", n)
	}
	// Two renders must not share a membership key by accident of templating.
	again, err := render(t, loadChart(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(kubeapply.Typed[corev1.Secret](t, again, "Secret", "pvelb-announcer-membership").Data["secret"], sec.Data["secret"]) {
		t.Error("the generated membership key is not random")
	}
}

// TestRenderFullValues renders everything and loads the rendered cloud
// config with pvelb's own strict parser, as pvelb-ccm would at start.
func TestRenderFullValues(t *testing.T) {
	objs, err := render(t, loadChart(t), readValues(t, filepath.Join(chartDir, "ci", "full-values.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	sec := kubeapply.Typed[corev1.Secret](t, objs, "Secret", "pvelb-cloud-config")
	dir := t.TempDir()
	for k, v := range sec.StringData {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, "cloud-config.yaml"))
	if err != nil {
		t.Fatalf("the rendered cloud config does not load: %v\n%s", err, sec.StringData["cloud-config.yaml"])
	}
	if len(cfg.Clusters) != 2 {
		t.Fatalf("clusters = %d, want 2", len(cfg.Clusters))
	}
	east, west := cfg.Region("pve-east"), cfg.Region("pve-west")
	if east == nil || west == nil {
		t.Fatal("regions pve-east and pve-west must be configured")
	}
	if east.TokenSecret.Reveal() != "11111111-2222-3333-4444-555555555555" {
		t.Error("pve-east token secret not carried through its file")
	}
	if len(east.URLs) != 2 || len(west.URLs) != 1 {
		t.Errorf("urls lost: pve-east %q (want 2), pve-west %q (want 1)", east.URLs, west.URLs)
	}
	if west.CAFile == "" {
		t.Error("pve-west CA not configured")
	}
	if cfg.LoadBalancer.ServeClasslessServices {
		t.Error("serveClasslessServices: false was lost")
	}
	if cfg.Firewall.ClusterIPSet != "k8s-vips" || !cfg.Firewall.AdmitRanges || !slices.Equal(cfg.Firewall.NICs, []string{"net0", "net1"}) {
		t.Errorf("firewall settings lost: %+v", cfg.Firewall)
	}
	if got := count(objs, "IPPool"); got != 2 {
		t.Errorf("IPPools = %d, want 2", got)
	}
	if got := count(objs, "BGPPeer"); got != 1 {
		t.Errorf("BGPPeers = %d, want 1", got)
	}
	role := kubeapply.Typed[rbacv1.Role](t, objs, "Role", "pvelb-announcer:bgp-passwords")
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].ResourceNames, []string{"pvelb-bgp-passwords"}) || !slices.Equal(role.Rules[0].Verbs, []string{"get"}) {
		t.Errorf("BGP password access must be get by name only: %+v", role.Rules)
	}
	ds := kubeapply.Typed[appsv1.DaemonSet](t, objs, "DaemonSet", "pvelb-announcer")
	c := ds.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "registry.example.com/pvelb/pvelb:v0.1.0-test") {
		t.Errorf("image = %s", c.Image)
	}
	for _, e := range c.Env {
		if e.Name == "KUBERNETES_SERVICE_HOST" {
			t.Error("kubePrism.enabled=false must leave the in-cluster Service address")
		}
	}
	if ds.Spec.Template.Spec.Volumes[0].Secret.SecretName != "my-membership-key" {
		t.Error("announcer.membershipSecret not used")
	}
	if kubeapply.Find(objs, "Secret", "pvelb-announcer-membership") != nil {
		t.Error("no membership Secret is generated when one is named")
	}
	d := kubeapply.Typed[appsv1.Deployment](t, objs, "Deployment", "pvelb-ccm")
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--concurrent-service-syncs=2") {
		t.Error("ccm.extraArgs lost")
	}
}

func TestRenderExistingSecret(t *testing.T) {
	objs, err := render(t, loadChart(t), readValues(t, filepath.Join(chartDir, "ci", "existing-secret-values.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	d := kubeapply.Typed[appsv1.Deployment](t, objs, "Deployment", "pvelb-ccm")
	if got := d.Spec.Template.Spec.Volumes[0].Secret.SecretName; got != "my-pvelb-config" {
		t.Errorf("cloud config Secret = %s, want my-pvelb-config", got)
	}
	// One replica still elects a leader: a rolling update runs the old pod
	// (terminating) and the new one at once, and without the lease both
	// would allocate.
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--leader-elect=true") {
		t.Error("one replica without leader election: a rolling update would run two active pods")
	}
	if n := count(objs, "DaemonSet") + count(objs, "Secret"); n != 0 {
		t.Errorf("announcer disabled and existing Secret: rendered %d DaemonSets/Secrets", n)
	}
}

// TestRenderRejectsBadValues: mistakes fail the render with the value's path.
func TestRenderRejectsBadValues(t *testing.T) {
	cases := []struct {
		name, values, want string
	}{
		{"missing token", `{proxmox: {clusters: [{region: a, url: "https://192.0.2.1:8006/api2/json", tokenID: "u@pve!t"}]}}`, "proxmox.clusters[0].tokenSecret is required"},
		{"missing url", `{proxmox: {clusters: [{region: a, tokenID: "u@pve!t", tokenSecret: x}]}}`, "proxmox.clusters[0].url (or urls) is required"},
		{"both sources", `{proxmox: {existingSecret: s, clusters: [{region: a, url: "https://192.0.2.1:8006/api2/json", tokenID: "u@pve!t", tokenSecret: x}]}}`, "set either existingSecret or clusters"},
		{"pool without spec", `{pools: [{name: p}]}`, "pools[0].spec is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.values), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := render(t, loadChart(t), vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestMatchesPlainManifests keeps the chart and manifests/ in step: the same
// CRDs byte for byte, and the same RBAC rules (which manifests_test.go checks
// against the apiserver's authorizer).
func TestMatchesPlainManifests(t *testing.T) {
	c := loadChart(t)
	crds := c.CRDObjects()
	if len(crds) == 0 {
		t.Fatal("the chart has no CRDs")
	}
	for _, crd := range crds {
		plain, err := os.ReadFile(filepath.Join("../../manifests/crds", filepath.Base(crd.Filename)))
		if err != nil {
			t.Errorf("%s: %v", crd.Filename, err)
			continue
		}
		if string(plain) != string(crd.File.Data) {
			t.Errorf("%s differs from manifests/crds: copy the generated CRDs into the chart", crd.Filename)
		}
	}
	objs, err := render(t, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	var plainObjs []*unstructured.Unstructured
	for _, f := range []string{"ccm-rbac.yaml", "announcer-rbac.yaml"} {
		data, err := os.ReadFile(filepath.Join("../../manifests", f))
		if err != nil {
			t.Fatal(err)
		}
		o, err := kubeapply.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		plainObjs = append(plainObjs, o...)
	}
	for _, u := range plainObjs {
		if u.GetKind() != "ClusterRole" && !(u.GetKind() == "Role" && u.GetName() == "pvelb-ccm:leader-election") {
			continue
		}
		want, _, _ := unstructured.NestedSlice(u.Object, "rules")
		got := kubeapply.Find(objs, u.GetKind(), u.GetName())
		if got == nil {
			t.Errorf("chart has no %s", kubeapply.Describe(u))
			continue
		}
		have, _, _ := unstructured.NestedSlice(got.Object, "rules")
		if !reflect.DeepEqual(want, have) {
			t.Errorf("%s rules differ from manifests/:\nchart: %v\nplain: %v", kubeapply.Describe(u), have, want)
		}
	}
}

// TestApplyToAPIServer installs the chart's CRDs for real, then applies each
// values case's rendered objects with server-side dry-run into a namespace
// labelled as the docs say, and finally one case for real with its Pods
// checked by Pod Security admission.
func TestApplyToAPIServer(t *testing.T) {
	a, client := kubeapply.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := loadChart(t)
	var crds []*unstructured.Unstructured
	for _, f := range c.CRDObjects() {
		o, err := kubeapply.Decode(f.File.Data)
		if err != nil {
			t.Fatalf("%s: %v", f.Filename, err)
		}
		crds = append(crds, o...)
	}
	if _, err := a.ApplyCRDs(ctx, crds, time.Minute); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "privileged",
	}}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Where ci/monitoring-values.yaml puts the Grafana dashboard.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, vc := range valuesCases(t) {
		t.Run(vc.name, func(t *testing.T) {
			objs, err := render(t, c, readValues(t, vc.file))
			if err != nil {
				t.Fatal(err)
			}
			// The Prometheus Operator's kinds have no CRDs here; they are
			// decoded strictly into its types in monitoring_test.go.
			objs = slices.DeleteFunc(objs, func(u *unstructured.Unstructured) bool {
				return u.GroupVersionKind().Group == "monitoring.coreos.com"
			})
			if err := a.Apply(ctx, objs, true); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Defaults for real, then the Pods the workloads would create (dry-run).
	objs, err := render(t, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, objs, false); err != nil {
		t.Fatal(err)
	}
	pods := map[string]corev1.PodSpec{
		"ccm":       kubeapply.Typed[appsv1.Deployment](t, objs, "Deployment", "pvelb-ccm").Spec.Template.Spec,
		"announcer": kubeapply.Typed[appsv1.DaemonSet](t, objs, "DaemonSet", "pvelb-announcer").Spec.Template.Spec,
	}
	for _, name := range slices.Sorted(maps.Keys(pods)) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: namespace}, Spec: pods[name]}
		if _, err := client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("%s pod refused: %v", name, err)
		}
	}
}
