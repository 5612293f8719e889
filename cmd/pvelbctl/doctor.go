package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pvelb/pvelb/announcer/membership"
	"github.com/pvelb/pvelb/cmd/pvelbctl/internal/doctor"
	"github.com/pvelb/pvelb/provider/config"
)

func runDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("pvelbctl doctor", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	cloudConfig := fs.String("cloud-config", "", "pvelb's cloud config (the file given to pvelb-ccm with --cloud-config); required")
	statusPort := fs.Int("announcer-status-port", 7948, "port of the announcers' /status (their --metrics-bind-address), read on each Node's InternalIP to find nodes that do not hear each other; 0 skips this check (needs a machine on the node network)")
	output := fs.StringP("output", "o", "text", "report format: text, or json (every finding with its severity, area, message and fix)")
	membershipPort := fs.Int("membership-port", membership.DefaultPort, "the announcers' --membership-port: checked against the VMs' firewall rules and named in fixes")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usageError{fmt.Errorf("--output %q: must be text or json", *output)}
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
	r := doctor.RunWith(ctx, cfg, nodes.Items, dyn, doctor.Options{MembershipPort: *membershipPort})
	doctor.CheckCluster(ctx, kube, nodes.Items, &r)
	doctor.CheckOthers(ctx, dyn, kube, &r)
	if *statusPort > 0 {
		doctor.CheckMembership(ctx, nodes.Items, doctor.HTTPStatus(*statusPort, nil), *membershipPort, &r)
	}
	if *output == "json" {
		if err := doctor.RenderJSON(stdout, r); err != nil {
			return err
		}
	} else {
		doctor.Render(stdout, r)
	}
	if fails, _ := r.Problems(); fails > 0 {
		return errProblemsFound
	}
	return nil
}
