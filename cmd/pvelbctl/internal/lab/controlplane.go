package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/test/apiserver"
)

// startControlPlane runs etcd and kube-apiserver in the control-plane
// namespace and installs the CRDs, which everything after needs.
func (l *Lab) startControlPlane(ctx context.Context) error {
	dir := filepath.Join(l.dir, "apiserver")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	l.p.say("starting etcd and kube-apiserver on %s (logs in %s)", l.ctl.IPv4.Addr(), dir)
	cp, err := apiserver.Start(ctx, apiserver.Options{
		Netns: l.ctl.Netns, BindAddress: l.ctl.IPv4.Addr().String(),
		Dir: dir, BinDir: l.opts.BinDir,
	})
	if err != nil {
		return err
	}
	l.cp = cp
	l.onTeardown(cp.Stop)
	// pvelbctl reaches the apiserver from inside the namespace.
	cp.Config.Dial = l.ctl.DialContext
	l.kube = kubernetes.NewForConfigOrDie(cp.Config)
	l.dyn = dynamic.NewForConfigOrDie(cp.Config)
	l.p.say("kube-apiserver ready at %s", cp.URL)
	if err := l.applyCRDs(ctx); err != nil {
		return err
	}
	// EndpointSlices for kube-proxy and the announcers, and the default
	// ServiceAccount without which no Pod is admitted.
	if err := cp.StartControllerManager(ctx, apiserver.ControllerManagerOptions{}); err != nil {
		return err
	}
	l.p.say("kube-controller-manager ready (controllers: %s)", strings.Join(apiserver.DataPathControllers, ", "))
	return nil
}

func (l *Lab) applyCRDs(ctx context.Context) error {
	files, _ := filepath.Glob(filepath.Join(l.opts.RepoDir, "manifests", "crds", "*.yaml"))
	var crdNames []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &obj.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := l.dyn.Resource(names.CRDs).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating CRD from %s: %w", f, err)
		}
		crdNames = append(crdNames, obj.GetName())
	}
	for _, name := range crdNames {
		if err := poll(ctx, 30*time.Second, "CRD "+name+" established", func(ctx context.Context) error {
			crd, err := l.dyn.Resource(names.CRDs).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return errors.New("not established yet")
		}); err != nil {
			return err
		}
	}
	l.p.say("CRDs established: %s", strings.Join(crdNames, ", "))
	return nil
}
