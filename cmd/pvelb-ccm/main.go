// Command pvelb-ccm is the Kubernetes cloud-controller-manager for clusters
// whose nodes are Proxmox VE VMs: the standard cloud-provider controllers
// (cloud-node, cloud-node-lifecycle, service) driven by the "proxmox" provider.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // build version metric
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/cmd/internal/buildinfo"
	"github.com/pvelb/pvelb/loadbalancer"
	"github.com/pvelb/pvelb/provider"
	"github.com/pvelb/pvelb/provider/csrapprover"
	"github.com/pvelb/pvelb/provider/nodelabels"
)

// leaderElectionName differs from the upstream default so pvelb can run
// beside (or replace) another cloud-controller-manager without sharing its lease.
const leaderElectionName = "pvelb-cloud-controller-manager"

// clientQPS and clientBurst are pvelb-ccm's defaults of --kube-api-qps and
// --kube-api-burst (upstream's: 20 and 30).
const (
	clientQPS   = 50
	clientBurst = 100
)

func main() {
	os.Exit(cli.Run(newCommand()))
}

// newCommand is the upstream cloud-controller-manager command with pvelb's
// defaults: --cloud-provider=proxmox and its own leader-election lease.
func newCommand() *cobra.Command {
	provider.Register()

	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("unable to initialize command options: %v", err)
	}
	opts.KubeCloudShared.CloudProvider.Name = provider.ProviderName
	opts.Generic.LeaderElection.ResourceName = leaderElectionName
	// The upstream service controller spends about five requests per
	// Service (finalizer, status, two Events, pvelb's quorum read) out of
	// one client budget; at upstream's 20 QPS, 1000 new Services took
	// 4m46s in the side-by-side lab, where MetalLB's controller, spending
	// two, took 84 s. kube-scheduler's defaults: the budget bounds bursts,
	// and a steady pvelb-ccm makes no requests.
	opts.Generic.ClientConnection.QPS = clientQPS
	opts.Generic.ClientConnection.Burst = clientBurst

	cmd := app.NewCloudControllerManagerCommand(opts, initCloud, controllers(), names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	cmd.Use = "pvelb-ccm"
	cmd.Long = `pvelb-ccm is the cloud-controller-manager for Kubernetes (Talos) clusters on Proxmox VE.
It matches Nodes to their VMs (providerID proxmox://<region>/<vmid>, topology labels,
instance type, addresses), removes Nodes whose VM is gone, taints stopped ones, and
serves LoadBalancer Services. Configure it with --cloud-config (YAML, see docs).`
	// Upstream's --version prints component-base's Kubernetes version
	// ("Kubernetes v0.0.0-master..."), which says nothing about pvelb, and
	// component-base's version must stay unset (package buildinfo says why).
	// Plain --version prints pvelb's version and commit instead;
	// --version=raw still prints upstream's details.
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if f := c.Flags().Lookup("version"); f != nil && f.Value.String() == "true" {
			fmt.Fprintln(c.OutOrStdout(), buildinfo.String(c.Name()))
			return nil
		}
		return run(c, args)
	}
	return cmd
}

// controllers is the upstream default set without the route controller:
// pvelb does not program routes (the CNI does), so it would only warn.
func controllers() map[string]app.ControllerInitFuncConstructor {
	out := map[string]app.ControllerInitFuncConstructor{}
	for name, c := range app.DefaultInitFuncConstructors {
		if name == names.NodeRouteController {
			continue
		}
		out[name] = c
	}
	return out
}

// fenceLease is the leader-election Lease the LoadBalancer fences its writes
// with, or nil when there is none (leader election off, or an older lock).
func fenceLease(c *config.CompletedConfig) *loadbalancer.Lease {
	le := c.ComponentConfig.Generic.LeaderElection
	if !le.LeaderElect || le.ResourceLock != "leases" {
		return nil
	}
	return &loadbalancer.Lease{Namespace: le.ResourceNamespace, Name: le.ResourceName,
		Duration: le.LeaseDuration.Duration, Poll: le.RetryPeriod.Duration}
}

// initCloud builds the cloud provider. For "proxmox" the config is loaded by
// path, so relative tokenSecretFile/caFile paths resolve against the config
// file's directory; other names go through the generic registry.
func initCloud(c *config.CompletedConfig) cloudprovider.Interface {
	cp := c.ComponentConfig.KubeCloudShared.CloudProvider
	var (
		cloud cloudprovider.Interface
		err   error
	)
	switch {
	case cp.Name == provider.ProviderName && cp.CloudConfigFile == "":
		klog.Fatalf("--cloud-config is required for the %s cloud provider", provider.ProviderName)
	case cp.Name == provider.ProviderName:
		cloud, err = provider.NewFromFile(cp.CloudConfigFile)
	default:
		cloud, err = cloudprovider.InitCloudProvider(cp.Name, cp.CloudConfigFile)
	}
	if err != nil {
		klog.Fatalf("Cloud provider %q could not be initialized: %v", cp.Name, err)
	}
	if cloud == nil {
		klog.Fatalf("Cloud provider %q is unknown (this binary knows %q)", cp.Name, provider.ProviderName)
	}
	if pc, ok := cloud.(*provider.Cloud); ok {
		// LoadBalancer (class-less Services, if configured) and, in the
		// leader, the class controller and the firewall reconciler.
		if _, err := loadbalancer.Attach(pc, fenceLease(c)); err != nil {
			klog.Fatalf("LoadBalancer could not be initialized: %v", err)
		}
		// In the leader: Node host labels follow live migrations.
		nodelabels.Attach(pc)
		// Opt-in: kubelet serving certificate requests of matching Nodes.
		csrapprover.Attach(pc)
	}
	if !cloud.HasClusterID() && !c.ComponentConfig.KubeCloudShared.AllowUntaggedCloud {
		klog.Fatalf("no ClusterID found; set --allow-untagged-cloud to bypass")
	}
	return cloud
}
