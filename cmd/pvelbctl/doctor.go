package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/cmd/pvelbctl/internal/doctor"
	"github.com/pvelb/pvelb/provider/config"
)

func runDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("pvelbctl doctor", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	cloudConfig := fs.String("cloud-config", "", "pvelb's cloud config (the file given to pvelb-ccm with --cloud-config); required")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *cloudConfig == "" {
		return usageError{errors.New("--cloud-config: required (e.g. the cloud.yaml key of the pvelb-cloud-config Secret, saved to a file)")}
	}
	cfg, err := config.Load(*cloudConfig)
	if err != nil {
		return fmt.Errorf("--cloud-config: %w", err)
	}
	kube, dyn, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing Nodes: %w", err)
	}
	r := doctor.Run(ctx, cfg, nodes.Items, dyn)
	doctor.Render(stdout, r)
	if fails, _ := r.Problems(); fails > 0 {
		return errProblemsFound
	}
	return nil
}
