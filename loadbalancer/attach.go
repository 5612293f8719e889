package loadbalancer

import (
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
func Attach(cloud *provider.Cloud) (*Controller, error) {
	cfg := cloud.Config()
	clients := map[string]pve.Client{}
	for _, cl := range cfg.Clusters {
		clients[cl.Region] = cloud.Client(cl.Region)
	}
	c, err := New(Options{Clients: clients, Firewall: cfg.Firewall, LoadBalancer: cfg.LoadBalancer})
	if err != nil {
		return nil, err
	}
	if c.ServesClassless() {
		cloud.SetLoadBalancer(c)
	}
	cloud.OnInitialize(c.Initialize)
	return c, nil
}
