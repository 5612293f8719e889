// Package provider is pvelb's cloudprovider.Interface, named "proxmox": it
// reads the cloud config, builds one Proxmox client per cluster (region) and
// serves InstancesV2 from them. The LoadBalancer is plugged in from outside
// (SetLoadBalancer) so the load-balancer packages can depend on this one
// without an import cycle.
package provider

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/informers"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
)

// ProviderName is the cloud provider name (--cloud-provider=proxmox).
const ProviderName = "proxmox"

// ConfigDirEnv names the environment variable that gives the directory
// relative tokenSecretFile/caFile paths are resolved against when the config
// arrives as a bare reader (the cloudprovider factory path). Unset: the
// process's working directory. pvelb-ccm itself loads the config by path, so
// there relative paths are relative to the config file.
const ConfigDirEnv = "PVELB_CLOUD_CONFIG_DIR"

// Options are the knobs of New beyond the cloud config.
type Options struct {
	// Metrics receives Proxmox request metrics. nil: metrics registered in
	// the controller manager's legacy registry, so they are served on its
	// /metrics endpoint.
	Metrics *pve.Metrics
	// NewClient builds a region's client; nil means pve.New. Tests may
	// substitute it.
	NewClient func(pve.Options) (pve.Client, error)
	// Clock is passed to the instance cache; nil means time.Now.
	Clock func() time.Time
}

// Cloud is pvelb's cloudprovider.Interface.
type Cloud struct {
	cfg       *config.Config
	clients   map[string]pve.Client
	instances *instances.Instances

	mu            sync.Mutex
	loadBalancer  cloudprovider.LoadBalancer
	clientBuilder cloudprovider.ControllerClientBuilder
	stop          <-chan struct{}
	initHooks     []InitializeHook
	informers     informers.SharedInformerFactory
	informerHooks []func(informers.SharedInformerFactory)
	initialized   bool
}

// InitializeHook runs when the controller manager initialises the cloud
// (after leader election), e.g. to start pvelb's own controllers.
type InitializeHook func(clientBuilder cloudprovider.ControllerClientBuilder, stop <-chan struct{})

var _ cloudprovider.Interface = (*Cloud)(nil)

var registerOnce sync.Once

// Register adds the "proxmox" provider to cloudprovider's registry. It is safe
// to call more than once (the registry itself exits the process on a second
// registration).
func Register() {
	registerOnce.Do(func() {
		cloudprovider.RegisterCloudProvider(ProviderName, func(r io.Reader) (cloudprovider.Interface, error) {
			if r == nil {
				return nil, errors.New("proxmox: a cloud config is required (--cloud-config)")
			}
			return NewFromReader(r, os.Getenv(ConfigDirEnv))
		})
	})
}

// NewFromReader parses a cloud config from r (relative paths against
// baseDir) and builds the Cloud.
func NewFromReader(r io.Reader, baseDir string) (*Cloud, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading cloud config: %w", err)
	}
	cfg, err := config.Parse(data, baseDir)
	if err != nil {
		return nil, err
	}
	return New(cfg, Options{})
}

// NewFromFile loads the cloud config at path (relative paths against its
// directory) and builds the Cloud.
func NewFromFile(path string) (*Cloud, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return New(cfg, Options{})
}

// New builds the Cloud from a validated config. It makes no Proxmox request.
func New(cfg *config.Config, opts Options) (*Cloud, error) {
	if cfg == nil || len(cfg.Clusters) == 0 {
		return nil, errors.New("proxmox: cloud config has no clusters")
	}
	newClient := opts.NewClient
	if newClient == nil {
		newClient = pve.New
	}
	metrics := opts.Metrics
	if metrics == nil {
		metrics = pve.NewMetrics(legacyregistry.Registerer())
	}
	c := &Cloud{cfg: cfg, clients: map[string]pve.Client{}}
	var regions []instances.Region
	for k, cl := range cfg.Clusters {
		if cl.InsecureSkipVerify {
			klog.InfoS("WARNING: TLS certificate verification is OFF for this Proxmox cluster; anyone on the path can read the API token. Use caFile instead.",
				"region", cl.Region, "urls", cl.URLs)
		}
		client, err := newClient(pve.Options{
			Region:             cl.Region,
			URLs:               cl.URLs,
			TokenID:            cl.TokenID,
			TokenSecret:        cl.TokenSecret.Reveal(),
			CAFile:             cl.CAFile,
			InsecureSkipVerify: cl.InsecureSkipVerify,
			Timeout:            cl.Timeout,
			Metrics:            metrics,
		})
		if err != nil {
			return nil, fmt.Errorf("clusters[%d] (region %s): %w", k, cl.Region, err)
		}
		c.clients[cl.Region] = client
		regions = append(regions, instances.Region{Name: cl.Region, Client: client})
	}
	inst, err := instances.New(instances.Options{
		Regions:   regions,
		Addresses: cfg.Instances.Addresses,
		CacheTTL:  cfg.Instances.CacheTTL,
		Clock:     opts.Clock,
	})
	if err != nil {
		return nil, err
	}
	c.instances = inst
	return c, nil
}

// Config returns the cloud config the Cloud was built from.
func (c *Cloud) Config() *config.Config { return c.cfg }

// Client returns the Proxmox client of a region, or nil.
func (c *Cloud) Client(region string) pve.Client { return c.clients[region] }

// VMs returns the InstancesV2 implementation, whose cached VM lists
// the load balancer's firewall wiring reads too.
func (c *Cloud) VMs() *instances.Instances { return c.instances }

// SetLoadBalancer plugs in the LoadBalancer implementation. Call it before
// the controller manager starts its controllers: the service controller
// asks for LoadBalancer() once, at start.
func (c *Cloud) SetLoadBalancer(lb cloudprovider.LoadBalancer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadBalancer = lb
}

// OnInitialize registers a hook run by Initialize (immediately, if
// Initialize already ran).
func (c *Cloud) OnInitialize(hook InitializeHook) {
	c.mu.Lock()
	if !c.initialized {
		c.initHooks = append(c.initHooks, hook)
		c.mu.Unlock()
		return
	}
	builder, stop := c.clientBuilder, c.stop
	c.mu.Unlock()
	hook(builder, stop)
}

// Initialize keeps the client builder and stop channel and runs the hooks.
func (c *Cloud) Initialize(clientBuilder cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	c.mu.Lock()
	c.clientBuilder, c.stop, c.initialized = clientBuilder, stop, true
	hooks := c.initHooks
	c.initHooks = nil
	c.mu.Unlock()
	for _, h := range hooks {
		h(clientBuilder, stop)
	}
}

// SetInformers is cloudprovider.InformerUser: the controller manager hands
// over its shared informer factory right after Initialize, before it starts
// it. The hooks (OnSetInformers) take their Service and Node informers from
// it, so pvelb-ccm keeps one copy of every Service and Node, not two.
func (c *Cloud) SetInformers(f informers.SharedInformerFactory) {
	c.mu.Lock()
	c.informers = f
	hooks := c.informerHooks
	c.informerHooks = nil
	c.mu.Unlock()
	for _, h := range hooks {
		h(f)
	}
}

// OnSetInformers registers a hook run by SetInformers (immediately, if it
// already ran).
func (c *Cloud) OnSetInformers(hook func(informers.SharedInformerFactory)) {
	c.mu.Lock()
	if c.informers == nil {
		c.informerHooks = append(c.informerHooks, hook)
		c.mu.Unlock()
		return
	}
	f := c.informers
	c.mu.Unlock()
	hook(f)
}

// LoadBalancer returns the plugged-in implementation, if any.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadBalancer, c.loadBalancer != nil
}

// Instances is not supported: pvelb implements InstancesV2.
func (c *Cloud) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 returns pvelb's Proxmox-backed implementation.
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool) { return c.instances, true }

// Zones is not supported (InstancesV2 reports region and zone).
func (c *Cloud) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not supported.
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not supported: the CNI routes pod traffic.
func (c *Cloud) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName returns "proxmox".
func (c *Cloud) ProviderName() string { return ProviderName }

// HasClusterID is true: each region names its Proxmox cluster.
func (c *Cloud) HasClusterID() bool { return true }
