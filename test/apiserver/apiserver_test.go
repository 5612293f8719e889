package apiserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlaneLifecycle proves the harness gives a real, validating
// apiserver reachable through the kubeconfig it writes, and that Stop leaves
// no process behind.
func TestControlPlaneLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	ctx := context.Background()
	cp, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)

	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "harness"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace through kubeconfig: %v", err)
	}
	// The announcers' kubeconfig: its own user, allowed what the admin is.
	acfg, err := clientcmd.BuildConfigFromFlags("", cp.AnnouncerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	acs := kubernetes.NewForConfigOrDie(acfg)
	who, err := acs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || who.Status.UserInfo.Username != AnnouncerUser {
		t.Fatalf("announcer kubeconfig authenticates as %+v (%v), want %s", who, err, AnnouncerUser)
	}
	if _, err := acs.CoreV1().Namespaces().Get(ctx, "harness", metav1.GetOptions{}); err != nil {
		t.Fatalf("announcer kubeconfig reads a namespace: %v", err)
	}
	// A real apiserver validates: a fake clientset would accept this Service.
	bad := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: "harness"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	_, err = cs.CoreV1().Services("harness").Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("LoadBalancer Service without ports: want Invalid, got %v", err)
	}
	// Dual-stack Services need both cluster-IP families configured.
	family := corev1.IPFamilyPolicyRequireDualStack
	ds := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: "harness"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, IPFamilyPolicy: &family,
			Ports: []corev1.ServicePort{{Port: 80}},
		},
	}
	got, err := cs.CoreV1().Services("harness").Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("dual-stack Service: %v", err)
	}
	if len(got.Spec.ClusterIPs) != 2 {
		t.Fatalf("dual-stack Service got cluster IPs %v, want two", got.Spec.ClusterIPs)
	}

	pids := []int{}
	for _, p := range cp.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	dir := cp.Dir
	cp.Stop()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still alive after Stop (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s left behind", dir)
	}
}

// TestStartFailureStopsEverything: when kube-apiserver cannot start (a bad
// flag here), Start returns its log and leaves no etcd behind.
func TestStartFailureStopsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	dir := t.TempDir()
	cp, err := Start(context.Background(), Options{Dir: dir, ExtraArgs: []string{"--pvelb-no-such-flag"}})
	if err == nil {
		cp.Stop()
		t.Fatal("Start with a bad kube-apiserver flag succeeded")
	}
	if !strings.Contains(err.Error(), "kube-apiserver exited") {
		t.Errorf("error does not say the apiserver exited: %v", err)
	}
	// Every process the harness started has dir on its command line.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			t.Errorf("%s still running after a failed Start: %q", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
