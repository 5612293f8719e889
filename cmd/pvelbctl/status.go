package main

import (
	"context"
	"io"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/pvelb/pvelb/cmd/pvelbctl/internal/status"
)

func runStatus(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("pvelbctl status", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	in, err := status.Collect(ctx, kube, dyn)
	if err != nil {
		return err
	}
	return status.Render(stdout, status.Build(in))
}

// restConfig loads a kubeconfig the way kubectl does.
func restConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, usageError{err}
	}
	cfg.UserAgent = "pvelbctl"
	return cfg, nil
}
