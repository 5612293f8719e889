package main

import (
	"context"
	"io"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pvelb/pvelb/cmd/pvelbctl/internal/status"
)

func runStatus(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("pvelbctl status", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	kube, dyn, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	in, err := status.Collect(ctx, kube, dyn)
	if err != nil {
		return err
	}
	return status.Render(stdout, status.Build(in))
}

// clients loads a kubeconfig the way kubectl does and makes the typed and
// dynamic clients from it.
func clients(kubeconfig string) (kubernetes.Interface, dynamic.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, nil, usageError{err}
	}
	cfg.UserAgent = "pvelbctl"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return kube, dyn, nil
}
