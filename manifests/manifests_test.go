package manifests_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/test/kubeapply"
)

const namespace = "pvelb-system"

// kustomizationResources reads the resources list of kustomization.yaml: the
// plain install is exactly these files, in this order.
func kustomizationResources(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if len(k.Resources) == 0 {
		t.Fatal("kustomization.yaml: resources is empty")
	}
	return k.Resources
}

func loadFiles(t *testing.T, paths ...string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kubeapply.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(objs) == 0 {
			t.Fatalf("%s: no objects", p)
		}
		out = append(out, objs...)
	}
	return out
}

func installObjects(t *testing.T) []*unstructured.Unstructured {
	return loadFiles(t, kustomizationResources(t)...)
}

func exampleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	return files
}

// TestKustomizationListsEveryManifest catches a manifest added to the
// directory but forgotten in the install (or listed but missing).
func TestKustomizationListsEveryManifest(t *testing.T) {
	listed := kustomizationResources(t)
	for _, glob := range []string{"*.yaml", "crds/*.yaml"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f == "kustomization.yaml" {
				continue
			}
			if !slices.Contains(listed, f) {
				t.Errorf("%s is not listed in kustomization.yaml resources", f)
			}
		}
	}
	seen := map[string]bool{}
	for _, u := range installObjects(t) {
		key := kubeapply.Describe(u)
		if seen[key] {
			t.Errorf("%s is defined twice", key)
		}
		seen[key] = true
		if _, ok := u.GetLabels()["app.kubernetes.io/part-of"]; !ok && u.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s has no app.kubernetes.io/part-of label", key)
		}
	}
}

func argValue(args []string, flag string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestCCMDeploymentShape(t *testing.T) {
	d := kubeapply.Typed[appsv1.Deployment](t, installObjects(t), "Deployment", "pvelb-ccm")
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	if spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName = %q", spec.PriorityClassName)
	}
	if spec.HostNetwork {
		t.Error("the CCM needs no host network")
	}
	for _, key := range []string{"node.cloudprovider.kubernetes.io/uninitialized", "node-role.kubernetes.io/control-plane"} {
		if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
			return tol.Key == key && tol.Operator == corev1.TolerationOpExists
		}) {
			t.Errorf("no toleration for %s", key)
		}
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext must set runAsNonRoot and seccomp RuntimeDefault: %+v", psc)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container securityContext must be read-only, no escalation, drop ALL: %+v", sc)
	}
	want := map[string]string{
		"--cloud-provider":                  "proxmox",
		"--leader-elect":                    "true",
		"--leader-elect-resource-namespace": namespace,
		"--leader-elect-resource-name":      "pvelb-cloud-controller-manager",
		"--use-service-account-credentials": "false",
	}
	for flag, v := range want {
		if got, _ := argValue(c.Args, flag); got != v {
			t.Errorf("%s = %q, want %q", flag, got, v)
		}
	}
	cfg, _ := argValue(c.Args, "--cloud-config")
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.ReadOnly && strings.HasPrefix(cfg, m.MountPath+"/")
	}) {
		t.Errorf("--cloud-config=%s is not in a read-only mount", cfg)
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "pvelb-cloud-config"
	}) {
		t.Error("the cloud config must come from the pvelb-cloud-config Secret")
	}
}

func TestAnnouncerDaemonSetShape(t *testing.T) {
	ds := kubeapply.Typed[appsv1.DaemonSet](t, installObjects(t), "DaemonSet", "pvelb-announcer")
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("the announcer must run on the host network to answer ARP for the node")
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy = %q", spec.DNSPolicy)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
	}) {
		t.Error("the announcer must tolerate every taint")
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("capabilities must drop ALL: %+v", sc)
	}
	for _, cp := range sc.Capabilities.Add {
		if cp != "NET_RAW" && cp != "NET_ADMIN" {
			t.Errorf("capability %s is not needed", cp)
		}
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the announcer must not be privileged")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("root filesystem must be read-only")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("NODE_NAME must come from spec.nodeName")
	}
	if env["KUBERNETES_SERVICE_HOST"].Value != "localhost" || env["KUBERNETES_SERVICE_PORT"].Value != "7445" {
		t.Error("the announcer must reach the API through Talos KubePrism (localhost:7445)")
	}
	file, _ := argValue(c.Args, "--membership-secret-file")
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.ReadOnly && strings.HasPrefix(file, m.MountPath+"/")
	}) {
		t.Errorf("--membership-secret-file=%s is not in a read-only mount", file)
	}
}

// TestApplyToAPIServer applies the install and the examples to a real
// kube-apiserver: server-side dry-run first (schema, defaulting, admission),
// then for real, then checks Pod Security admission and RBAC with the
// apiserver's own authorizer.
func TestApplyToAPIServer(t *testing.T) {
	a, client := kubeapply.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	objs, err := a.ApplyCRDs(ctx, installObjects(t), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Namespaced objects can only be dry-run into a namespace that exists.
	ns := kubeapply.Find(objs, "Namespace", namespace)
	if ns == nil {
		t.Fatal("no Namespace " + namespace)
	}
	if err := a.ApplyOne(ctx, ns, true); err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyOne(ctx, ns, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, objs, true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.AppsV1().Deployments(namespace).Get(ctx, "pvelb-ccm", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run stored the Deployment (err=%v)", err)
	}
	if err := a.Apply(ctx, objs, false); err != nil {
		t.Fatal(err)
	}
	examples := loadFiles(t, exampleFiles(t)...)
	if err := a.Apply(ctx, examples, true); err != nil {
		t.Fatal(err)
	}

	t.Run("PodSecurity", func(t *testing.T) { checkPodSecurity(ctx, t, client, objs) })
	t.Run("CCMAccess", func(t *testing.T) { checkCCMAccess(ctx, t, client, objs) })
	t.Run("AnnouncerAccess", func(t *testing.T) { checkAnnouncerAccess(ctx, t, client) })
}

// checkPodSecurity creates (dry-run) the Pods the workloads would create, so
// Pod Security admission judges the real pod specs: both are admitted in
// pvelb-system, the announcer is refused under baseline (so the privileged
// level is needed, and enforced), and the CCM passes restricted.
func checkPodSecurity(ctx context.Context, t *testing.T, client kubernetes.Interface, objs []*unstructured.Unstructured) {
	ccm := kubeapply.Typed[appsv1.Deployment](t, objs, "Deployment", "pvelb-ccm")
	ann := kubeapply.Typed[appsv1.DaemonSet](t, objs, "DaemonSet", "pvelb-announcer")
	for _, level := range []string{"baseline", "restricted"} {
		nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "psa-" + level, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": level,
		}}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, sa := range []string{"pvelb-ccm", "pvelb-announcer"} {
			if _, err := client.CoreV1().ServiceAccounts(nsObj.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name, ns string
		spec     corev1.PodSpec
		admitted bool
	}{
		{"announcer in " + namespace, namespace, ann.Spec.Template.Spec, true},
		{"ccm in " + namespace, namespace, ccm.Spec.Template.Spec, true},
		{"announcer under baseline", "psa-baseline", ann.Spec.Template.Spec, false},
		{"ccm under restricted", "psa-restricted", ccm.Spec.Template.Spec, true},
	}
	for _, tc := range cases {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "psa-", Namespace: tc.ns}, Spec: *tc.spec.DeepCopy()}
		_, err := client.CoreV1().Pods(tc.ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case tc.admitted && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case !tc.admitted && err == nil:
			t.Errorf("%s: admitted, want refused by Pod Security", tc.name)
		case !tc.admitted && !strings.Contains(err.Error(), "violates PodSecurity"):
			t.Errorf("%s: refused for another reason: %v", tc.name, err)
		}
	}
}

func checkAccess(ctx context.Context, t *testing.T, client kubernetes.Interface, sa string, allowed, denied []kubeapply.Access) {
	t.Helper()
	user, groups := kubeapply.ServiceAccountUser(namespace, sa)
	for _, want := range []struct {
		list    []kubeapply.Access
		allowed bool
	}{{allowed, true}, {denied, false}} {
		for _, acc := range want.list {
			got, err := kubeapply.Allowed(ctx, client, user, groups, acc)
			if err != nil {
				t.Errorf("%s: %v", sa, err)
				continue
			}
			if got != want.allowed {
				t.Errorf("%s may %s: %t, want %t", sa, acc, got, want.allowed)
			}
		}
	}
}

// checkCCMAccess lists what the cloud-provider controllers and pvelb's
// LoadBalancer code call, and what the CCM must not be able to do.
func checkCCMAccess(ctx context.Context, t *testing.T, client kubernetes.Interface, objs []*unstructured.Unstructured) {
	d := kubeapply.Typed[appsv1.Deployment](t, objs, "Deployment", "pvelb-ccm")
	args := d.Spec.Template.Spec.Containers[0].Args
	leaseNS, _ := argValue(args, "--leader-elect-resource-namespace")
	leaseName, _ := argValue(args, "--leader-elect-resource-name")
	var allowed []kubeapply.Access
	add := func(group, resource, sub, ns, name string, verbs ...string) {
		for _, v := range verbs {
			allowed = append(allowed, kubeapply.Access{Verb: v, Group: group, Resource: resource, Subresource: sub, Namespace: ns, Name: name})
		}
	}
	add("", "nodes", "", "", "", "get", "list", "watch", "update", "patch", "delete")
	add("", "nodes", "status", "", "", "patch", "update")
	add("", "services", "", "", "", "list", "watch")
	add("", "services", "", "default", "", "get", "patch", "update")
	add("", "services", "status", "default", "", "patch", "update")
	add("", "namespaces", "", "", "", "list", "watch")
	add("", "events", "", "default", "", "create", "patch", "update")
	add("pvelb.io", "ippools", "", "", "", "get", "list", "watch")
	add("pvelb.io", "ippools", "status", "", "", "update", "patch")
	add("coordination.k8s.io", "leases", "", leaseNS, "", "create")
	add("coordination.k8s.io", "leases", "", leaseNS, leaseName, "get", "update")
	add("authentication.k8s.io", "tokenreviews", "", "", "", "create")
	add("authorization.k8s.io", "subjectaccessreviews", "", "", "", "create")
	add("", "configmaps", "", "kube-system", "extension-apiserver-authentication", "get", "list", "watch")
	denied := []kubeapply.Access{
		{Verb: "get", Resource: "secrets", Namespace: namespace, Name: "pvelb-cloud-config"},
		{Verb: "list", Resource: "secrets"},
		{Verb: "create", Resource: "serviceaccounts", Subresource: "token", Namespace: "kube-system", Name: "node-controller"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system", Name: "kube-controller-manager"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: leaseNS, Name: "other"},
		{Verb: "get", Resource: "configmaps", Namespace: "kube-system", Name: "kube-proxy"},
		{Verb: "create", Resource: "pods", Namespace: "default"},
		{Verb: "delete", Resource: "services", Namespace: "default"},
		{Verb: "create", Group: "pvelb.io", Resource: "ippools"},
		{Verb: "update", Group: "pvelb.io", Resource: "ippools"},
		{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "default"},
	}
	checkAccess(ctx, t, client, "pvelb-ccm", allowed, denied)
}

func checkAnnouncerAccess(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	var allowed []kubeapply.Access
	for _, r := range []struct{ group, resource string }{
		{"", "services"}, {"", "nodes"}, {"discovery.k8s.io", "endpointslices"},
		{"pvelb.io", "ippools"}, {"pvelb.io", "bgppeers"},
	} {
		for _, v := range []string{"get", "list", "watch"} {
			allowed = append(allowed, kubeapply.Access{Verb: v, Group: r.group, Resource: r.resource})
		}
	}
	allowed = append(allowed,
		kubeapply.Access{Verb: "create", Resource: "events", Namespace: "default"},
		kubeapply.Access{Verb: "patch", Resource: "events", Namespace: "default"},
		kubeapply.Access{Verb: "get", Resource: "secrets", Namespace: namespace, Name: "pvelb-bgp-passwords"},
	)
	for _, v := range []string{"get", "list", "watch", "create", "patch", "delete"} {
		allowed = append(allowed, kubeapply.Access{Verb: v, Group: "pvelb.io", Resource: "serviceannouncements", Namespace: "default"})
	}
	allowed = append(allowed, kubeapply.Access{Verb: "patch", Group: "pvelb.io", Resource: "bgppeers", Subresource: "status"})
	denied := []kubeapply.Access{
		{Verb: "update", Group: "pvelb.io", Resource: "serviceannouncements", Namespace: "default"},
		{Verb: "patch", Group: "pvelb.io", Resource: "bgppeers"},
		{Verb: "deletecollection", Group: "pvelb.io", Resource: "serviceannouncements", Namespace: "default"},
		{Verb: "get", Resource: "secrets", Namespace: namespace, Name: "pvelb-cloud-config"},
		{Verb: "list", Resource: "secrets", Namespace: namespace},
		{Verb: "watch", Resource: "secrets", Namespace: namespace},
		{Verb: "get", Resource: "secrets", Namespace: "default", Name: "pvelb-bgp-passwords"},
		{Verb: "patch", Resource: "services", Namespace: "default"},
		{Verb: "patch", Resource: "services", Subresource: "status", Namespace: "default"},
		{Verb: "patch", Resource: "nodes"},
		{Verb: "update", Group: "pvelb.io", Resource: "ippools", Subresource: "status"},
		{Verb: "create", Resource: "pods", Namespace: namespace},
		{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "default"},
	}
	checkAccess(ctx, t, client, "pvelb-announcer", allowed, denied)
}

// TestExampleCloudConfigLoads: the example Secret, mounted as the Deployment
// mounts it, is a cloud config pvelb-ccm's strict parser accepts.
func TestExampleCloudConfigLoads(t *testing.T) {
	sec := kubeapply.Typed[corev1.Secret](t, loadFiles(t, "examples/cloud-config-secret.yaml"), "Secret", "pvelb-cloud-config")
	dir := t.TempDir()
	for k, v := range sec.StringData {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	d := kubeapply.Typed[appsv1.Deployment](t, installObjects(t), "Deployment", "pvelb-ccm")
	flag, _ := argValue(d.Spec.Template.Spec.Containers[0].Args, "--cloud-config")
	cfg, err := config.Load(filepath.Join(dir, filepath.Base(flag)))
	if err != nil {
		t.Fatalf("%s from the example Secret: %v", flag, err)
	}
	if len(cfg.Clusters) != 1 || cfg.Clusters[0].TokenSecret.Reveal() == "" {
		t.Errorf("the example's token file was not read: %+v", cfg.Clusters)
	}
}
