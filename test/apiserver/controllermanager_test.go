package apiserver

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestControllerManager: the real kube-controller-manager runs its
// controllers against the control plane (a new namespace gets its default
// ServiceAccount from serviceaccount-controller) and Stop takes it down
// with the rest. The data path it serves is tested in test/datapath.
func TestControllerManager(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver, etcd and kube-controller-manager")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := StartT(t, Options{})
	if err := cp.StartControllerManager(ctx, ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	kube := cp.Client()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kcm"}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := kube.CoreV1().ServiceAccounts("kcm").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no default ServiceAccount in a new namespace: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	kcm := cp.procs[len(cp.procs)-1]
	if kcm.name != "kube-controller-manager" {
		t.Fatalf("last process is %s", kcm.name)
	}
	pid := kcm.cmd.Process.Pid
	cp.Stop()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kube-controller-manager %d still alive after Stop (kill 0: %v)", pid, err)
	}
}
