package loadbalancer

import (
	"context"
	"net/netip"
	"os"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/provider"
	"github.com/pvelb/pvelb/provider/pve"
)

// Attach builds the Controller from the cloud's config and Proxmox clients and
// plugs it into the cloud:
//   - as the cloud's LoadBalancer, so the cloud-provider service controller
//     serves class-less Services, only when loadBalancer.serveClasslessServices
//     is true. When false, Cloud.LoadBalancer() answers false and the service
//     controller does not start at all (it logs that the provider has no load
//     balancers), so class-less Services are left to another implementation
//     (MetalLB, Cilium) and never get pvelb's finalizer;
//   - as an Initialize hook, so the class controller, the firewall reconciler
//     and the IPPool status writer run in the elected leader only.
//
// lease is pvelb-ccm's leader-election Lease (nil without leader election):
// allocation and Service writes stop as soon as this replica may no longer
// lead (see leaseFence).
func Attach(cloud *provider.Cloud, lease *Lease) (*Controller, error) {
	if os.Getenv(NoopEnv) == "1" {
		klog.InfoS("WARNING: benchmark baseline: the LoadBalancer does nothing", "env", NoopEnv)
		cloud.SetLoadBalancer(noopLoadBalancer{})
		return nil, nil
	}
	cfg := cloud.Config()
	clients := map[string]pve.Client{}
	for _, cl := range cfg.Clusters {
		clients[cl.Region] = cloud.Client(cl.Region)
	}
	c, err := New(Options{Clients: clients, VMs: cloud.VMs(), Firewall: cfg.Firewall, LoadBalancer: cfg.LoadBalancer, Lease: lease,
		RecordNamespace: recordNamespace(lease)})
	if err != nil {
		return nil, err
	}
	if c.ServesClassless() {
		cloud.SetLoadBalancer(c)
	}
	cloud.OnInitialize(c.Initialize)
	cloud.OnSetInformers(c.SetInformers)
	return c, nil
}

// recordNamespace is where the record of the VMs with pvelb's entries
// lives: beside the leader-election Lease, pvelb-ccm's own namespace, or
// without leader election the Pod's namespace (POD_NAMESPACE, from the
// downward API); "" when neither is known.
func recordNamespace(lease *Lease) string {
	if lease != nil && lease.Namespace != "" {
		return lease.Namespace
	}
	return os.Getenv("POD_NAMESPACE")
}

// NoopEnv, set to "1" in pvelb-ccm's environment, plugs in a LoadBalancer
// that does nothing and returns one fixed address for every Service. It is the
// baseline of the LoadBalancer benchmark (the cost of the service controller
// and the apiserver alone); never set it in a real cluster.
const NoopEnv = "PVELB_BENCHMARK_NOOP_LOADBALANCER"

// noopLoadBalancer is the benchmark baseline: no allocation, no Proxmox.
type noopLoadBalancer struct{}

var noopStatus = statusFor([]netip.Addr{netip.MustParseAddr("203.0.113.254")})

func (noopLoadBalancer) GetLoadBalancer(_ context.Context, _ string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	return noopStatus.DeepCopy(), len(svc.Status.LoadBalancer.Ingress) > 0, nil
}
func (noopLoadBalancer) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}
func (noopLoadBalancer) EnsureLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) (*v1.LoadBalancerStatus, error) {
	return noopStatus.DeepCopy(), nil
}
func (noopLoadBalancer) UpdateLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) error {
	return nil
}
func (noopLoadBalancer) EnsureLoadBalancerDeleted(context.Context, string, *v1.Service) error {
	return nil
}
