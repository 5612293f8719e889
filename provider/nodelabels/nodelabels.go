// Package nodelabels keeps the Proxmox host labels of initialised Nodes
// current. The cloud node controller writes topology.kubernetes.io/zone and
// pvelb.io/proxmox-host once, when it initialises a Node; after a live
// migration they would name the old host for good, and the announcers'
// host diversity, topology spread and zone-aware volumes would work from
// it. This controller compares them with each VM's current host every
// period and patches the ones that differ (the Proxmox CCM's
// force_update_labels).
package nodelabels

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	cloudproviderapi "k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider"
	"github.com/pvelb/pvelb/provider/instances"
)

// HostLabels are the labels that name a Node's Proxmox host.
var HostLabels = []string{v1.LabelTopologyZone, names.LabelProxmoxHost}

// Changes returns the labels to set on node so that HostLabels name host, or
// nil when they already do. A Node still being initialised is left to the
// cloud node controller, and a host name that is no label value is not
// written (as at initialisation).
func Changes(node *v1.Node, host string) map[string]string {
	if !instances.IsLabelValue(host) {
		return nil
	}
	for _, t := range node.Spec.Taints {
		if t.Key == cloudproviderapi.TaintExternalCloudProvider {
			return nil
		}
	}
	var out map[string]string
	set := func(k string) {
		if node.Labels[k] != host {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = host
		}
	}
	for _, k := range HostLabels {
		set(k)
	}
	// The cloud node controller copies the deprecated zone label over the
	// topology one whenever they differ (reconcileNodeLabels): it must move
	// too, or it would move the zone back.
	if _, ok := node.Labels[v1.LabelFailureDomainBetaZone]; ok {
		set(v1.LabelFailureDomainBetaZone)
	}
	return out
}

// Controller is the label controller.
type Controller struct {
	vms    *instances.Instances
	period time.Duration
	kube   kubernetes.Interface
	nodes  corelisters.NodeLister
}

// New returns a controller comparing every period.
func New(vms *instances.Instances, kube kubernetes.Interface, nodes corelisters.NodeLister, period time.Duration) *Controller {
	return &Controller{vms: vms, period: period, kube: kube, nodes: nodes}
}

// Sync compares every Node once and patches those whose host labels are
// stale. It returns how many Nodes it patched and the errors met (a Node
// whose VM could not be looked up is left as it is).
func (c *Controller) Sync(ctx context.Context) (int, error) {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	slices.SortFunc(nodes, func(a, b *v1.Node) int { return strings.Compare(a.Name, b.Name) })
	var errs []error
	patched := 0
	for _, n := range nodes {
		if n.Spec.ProviderID == "" || n.DeletionTimestamp != nil {
			continue
		}
		// A list at most half a period old: one list per period serves
		// every Node, and a migration shows within 1.5 periods.
		host, found, err := c.vms.HostOf(ctx, n.Spec.ProviderID, c.period/2)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
			continue
		}
		if !found {
			continue
		}
		set := Changes(n, host)
		if set == nil {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": set}})
		if _, err := c.kube.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("node %s: patching labels %v: %w", n.Name, set, err))
			continue
		}
		patched++
		old := map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(set)) {
			old[k] = n.Labels[k]
		}
		klog.InfoS("Node's VM runs on another Proxmox host; labels updated", "node", klog.KObj(n),
			"providerID", n.Spec.ProviderID, "host", host, "was", old)
	}
	return patched, errors.Join(errs...)
}

// Run syncs every period until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.period)
	defer t.Stop()
	for {
		if _, err := c.Sync(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Keeping Node host labels current")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Attach runs the controller in pvelb-ccm's elected leader when the cloud
// config's instances.labelSyncPeriod is not 0, on the controller manager's
// Node informer.
func Attach(cloud *provider.Cloud) {
	period := cloud.Config().Instances.LabelSyncPeriod
	if period <= 0 {
		klog.InfoS("Node host labels are not kept current after live migrations (instances.labelSyncPeriod: 0)")
		return
	}
	cloud.RunInLeader(provider.LeaderController{
		Name: "pvelb-node-labels",
		Informers: func(f informers.SharedInformerFactory) []cache.InformerSynced {
			return []cache.InformerSynced{f.Core().V1().Nodes().Informer().HasSynced}
		},
		Run: func(ctx context.Context, kube kubernetes.Interface, f informers.SharedInformerFactory) {
			New(cloud.VMs(), kube, f.Core().V1().Nodes().Lister(), period).Run(ctx)
		},
	})
}
