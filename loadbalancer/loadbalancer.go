// Package loadbalancer is pvelb's cloudprovider.LoadBalancer: it hands out
// addresses from IPPools (through the pure allocator), reports them in the
// Service status with ipMode VIP, admits them in the Proxmox firewall IPSets
// of the VMs that may announce them (through the firewall reconciler), and
// runs pvelb's own controller for Services of class pvelb.io/loadbalancer.
//
// One Controller serves both paths: the cloud-provider service controller
// (class-less Services, when loadBalancer.serveClasslessServices is true) and
// the class controller. Both call the same ensure/delete code under one lock,
// so the allocator sees one consistent stream of requests.
//
// Proxmox failures never fail EnsureLoadBalancer: the address is allocated and
// reported at once, the firewall reconciler admits it in the background and
// retries, and a failure shows as a Warning Event on the Service (naming the
// VM and Proxmox's answer) and in pvelb_loadbalancer_firewall_failing_services.
// Failing the Service would not help it (the allocation is already right) and
// would make the service controller back off for minutes.
package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
)

const (
	// ClassName is the loadBalancerClass served by pvelb's own controller.
	ClassName = "pvelb.io/loadbalancer"
	// AnnotationAllocatedPool is written by pvelb: the IPPool(s) the Service's
	// addresses came from, in the order of status.loadBalancer.ingress. It is
	// pvelb's record, separate from what the user asked for (pvelb.io/pool).
	AnnotationAllocatedPool = "pvelb.io/allocated-pool"
	// FinalizerName is the standard cleanup finalizer, used by the class
	// controller too so that tools that know it keep working.
	FinalizerName = "service.kubernetes.io/load-balancer-cleanup"

	defaultReadyTimeout = 30 * time.Second
	vmRefreshPeriod     = 30 * time.Second
	desiredDebounce     = 200 * time.Millisecond
	poolStatusDebounce  = time.Second
)

// Event reasons pvelb uses on Services (besides the allocator's reasons).
const (
	EventAllocated        = "AllocatedAddress"
	EventAllocationFailed = "AllocationFailed"
	EventOutsidePools     = "AddressOutsidePools"
	EventNoEligibleNode   = "NoEligibleNode"
	EventFirewallFailed   = "FirewallAdmissionFailed"
	EventFirewallOK       = "FirewallAdmitted"
	EventRestoreConflict  = "AddressConflict"
	EventPartialDualStack = "PartialDualStack"
)

// Options configure New.
type Options struct {
	// Clients are the Proxmox clusters by region (cloud-config clusters[]).
	Clients map[string]pve.Client
	// Firewall is the cloud-config firewall section.
	Firewall config.Firewall
	// LoadBalancer is the cloud-config loadBalancer section.
	LoadBalancer config.LoadBalancer
	// Registerer receives metrics; nil means the component-base legacy
	// registry, which pvelb-ccm serves on /metrics.
	Registerer prometheus.Registerer
	// ReadyTimeout is how long a call waits for allocations to be restored
	// from existing Services after start (default 30s).
	ReadyTimeout time.Duration
}

// Controller is pvelb's LoadBalancer: allocation, status, firewall wiring,
// IPPool status and the pvelb.io/loadbalancer class controller.
type Controller struct {
	opts    Options
	metrics *metrics
	fw      *firewall.Reconciler
	locator *vmLocator

	// Set by Start.
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	recorder   record.EventRecorder
	services   corelisters.ServiceLister
	nodes      corelisters.NodeLister
	namespaces corelisters.NamespaceLister
	class      *classController
	started    bool

	ready chan struct{}
	// desiredQueue holds one item, desiredKey, whenever the firewall's
	// desired state must be recomputed: a workqueue coalesces bursts of
	// changes and backs off retries (a VM Proxmox did not list yet).
	desiredQueue workqueue.TypedRateLimitingInterface[string]
	poolStatCh   chan struct{}
	// allocatedPoolCh asks for AnnotationAllocatedPool to be rewritten
	// after pool changes (see allocatedPoolLoop).
	allocatedPoolCh chan struct{}
	// admitted publishes what each Node's VM admits (set by Start).
	admitted *admittedWriter
	// lastDesired is the desired state last handed to the reconciler: an
	// unchanged one is not handed again (each hand-over costs a pass).
	lastDesired *firewall.Desired

	mu       sync.Mutex // guards everything below
	alloc    *allocator.Allocator
	pools    map[string]*poolState
	assigned map[allocator.ServiceKey][]netip.Addr
	// last Event messages per Service, so a repeated state is not re-announced.
	noNode      map[string]string
	fwFailing   map[string]string
	outsideSeen map[string]string
	// nodeVMs maps Node names to their VMs as of the last desired state:
	// a reconcile pass's admission is published only on the Node whose VM
	// it is now (a pass may have started before the Node's VM changed).
	nodeVMs map[string]vmLocation
}

var _ cloudprovider.LoadBalancer = (*Controller)(nil)

// New validates opts and builds the Controller. Nothing runs until Start.
func New(opts Options) (*Controller, error) {
	if len(opts.Clients) == 0 {
		return nil, errors.New("loadbalancer: no Proxmox cluster configured")
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = defaultReadyTimeout
	}
	if opts.Registerer == nil {
		opts.Registerer = legacyregistry.Registerer()
	}
	c := &Controller{
		opts:    opts,
		metrics: newMetrics(opts.Registerer),
		locator: newVMLocator(opts.Clients, vmRefreshPeriod),
		ready:   make(chan struct{}),
		desiredQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, vmRefreshPeriod),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pvelb-desired"}),
		poolStatCh:      make(chan struct{}, 1),
		allocatedPoolCh: make(chan struct{}, 1),
		alloc:           allocator.New(),
		pools:           map[string]*poolState{},
		assigned:        map[allocator.ServiceKey][]netip.Addr{},
		noNode:          map[string]string{},
		fwFailing:       map[string]string{},
		outsideSeen:     map[string]string{},
		nodeVMs:         map[string]vmLocation{},
	}
	if opts.Firewall.Enabled {
		fw, err := firewall.New(opts.Clients, firewall.Options{
			ClusterSet:   opts.Firewall.ClusterIPSet,
			NICs:         opts.Firewall.NICs,
			AdmitRanges:  opts.Firewall.AdmitRanges,
			ResyncPeriod: opts.Firewall.ResyncPeriod,
			Metrics:      firewall.NewMetrics(opts.Registerer),
			OnResult:     c.onFirewallResult,
		})
		if err != nil {
			return nil, fmt.Errorf("loadbalancer: firewall: %w", err)
		}
		c.fw = fw
	}
	return c, nil
}

// ServesClassless reports whether class-less Services are served (through the
// cloud-provider service controller).
func (c *Controller) ServesClassless() bool { return c.opts.LoadBalancer.ServeClasslessServices }

// serves reports whether pvelb is responsible for svc's addresses.
func (c *Controller) serves(svc *v1.Service) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return c.ServesClassless()
	}
	return *svc.Spec.LoadBalancerClass == ClassName
}

func keyOf(svc *v1.Service) allocator.ServiceKey {
	return allocator.ServiceKey{Namespace: svc.Namespace, Name: svc.Name}
}

func (c *Controller) waitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	default:
	}
	t := time.NewTimer(c.opts.ReadyTimeout)
	defer t.Stop()
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("pvelb is still restoring the allocations of existing Services; will retry")
	}
}

// GetLoadBalancerName is a stable name for logs: pvelb has no cloud object.
func (c *Controller) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}

// GetLoadBalancer reports what pvelb holds for svc, even partially (an
// address held, or only its own annotation left), so that the service
// controller always calls EnsureLoadBalancerDeleted and nothing leaks.
// Services of other classes are never reported, whatever their status says.
func (c *Controller) GetLoadBalancer(_ context.Context, _ string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	c.mu.Lock()
	ips := c.alloc.Assigned(keyOf(svc))
	c.mu.Unlock()
	if len(ips) > 0 {
		return statusFor(ips), true, nil
	}
	if _, ok := svc.Annotations[AnnotationAllocatedPool]; ok {
		return &v1.LoadBalancerStatus{}, true, nil
	}
	return nil, false, nil
}

// EnsureLoadBalancer allocates (or keeps) svc's addresses and returns its
// status. nodes is ignored: the nodes that may announce an address are
// computed from the Node informer with the service controller's predicates
// and the pool's node selector, the same way for both controllers.
func (c *Controller) EnsureLoadBalancer(ctx context.Context, _ string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	return c.ensure(ctx, svc, "service-controller")
}

// UpdateLoadBalancer is called when the set of nodes changed; the firewall's
// desired state follows the Node informer already, so this only nudges it.
func (c *Controller) UpdateLoadBalancer(ctx context.Context, _ string, _ *v1.Service, _ []*v1.Node) error {
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	c.kickDesired()
	return nil
}

// EnsureLoadBalancerDeleted releases svc's addresses; the firewall reconciler
// then removes them from every IPSet.
func (c *Controller) EnsureLoadBalancerDeleted(ctx context.Context, _ string, svc *v1.Service) error {
	return c.release(ctx, svc)
}

func (c *Controller) ensure(ctx context.Context, svc *v1.Service, via string) (*v1.LoadBalancerStatus, error) {
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	req, err := c.toRequest(svc)
	var res allocator.Result
	key := keyOf(svc)
	if err == nil {
		c.mu.Lock()
		res, err = c.alloc.Assign(req, ingressIPs(svc))
		if err == nil {
			c.assigned[key] = res.IPs
			c.metrics.services.Set(float64(len(c.assigned)))
		}
		c.mu.Unlock()
	}
	if err != nil {
		reason := eventReason(err)
		c.metrics.failures.WithLabelValues(reason).Inc()
		c.event(svc, v1.EventTypeWarning, reason, "%v", err)
		klog.InfoS("Address allocation failed", "service", klog.KObj(svc), "reason", reason, "err", err)
		return nil, fmt.Errorf("%s: %w", reason, err)
	}
	if res.Changed {
		c.metrics.allocations.WithLabelValues(via).Inc()
		c.event(svc, v1.EventTypeNormal, EventAllocated, "%s", describeAssignment(res))
		klog.InfoS("Addresses assigned", "service", klog.KObj(svc), "ips", res.IPs, "pools", res.Pools, "via", via)
	}
	for _, n := range res.Notes {
		c.event(svc, v1.EventTypeWarning, EventPartialDualStack, "%s", n)
	}
	if err := c.recordPools(ctx, svc, res.Pools); err != nil {
		return nil, err
	}
	c.kickDesired()
	c.kickPoolStatus()
	return statusFor(res.IPs), nil
}

func (c *Controller) release(ctx context.Context, svc *v1.Service) error {
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	key := keyOf(svc)
	c.mu.Lock()
	_, held := c.assigned[key]
	c.alloc.Release(key)
	delete(c.assigned, key)
	delete(c.noNode, key.String())
	c.metrics.services.Set(float64(len(c.assigned)))
	c.mu.Unlock()
	if held {
		klog.InfoS("Addresses released", "service", klog.KObj(svc))
	}
	if svc.DeletionTimestamp == nil {
		if err := c.recordPools(ctx, svc, nil); err != nil {
			return err
		}
	}
	c.kickDesired()
	c.kickPoolStatus()
	return nil
}

// recordPools keeps AnnotationAllocatedPool in line with the pools the held
// addresses belong to (see allocatedPoolValue; removed when none are held).
func (c *Controller) recordPools(ctx context.Context, svc *v1.Service, pools []string) error {
	have, ok := svc.Annotations[AnnotationAllocatedPool]
	want, remove := allocatedPoolValue(pools, have, ok)
	if (remove && !ok) || (!remove && ok && have == want) {
		return nil
	}
	_, err := c.kube.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, allocatedPoolPatch(want, remove, ""), metav1PatchOptions)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("recording annotation %s: %w", AnnotationAllocatedPool, err)
	}
	return nil
}

// toRequest converts a Service into the allocator's terms.
func (c *Controller) toRequest(svc *v1.Service) (allocator.Service, error) {
	ips, err := allocator.ParseRequest(svc.Annotations, svc.Spec.LoadBalancerIP)
	if err != nil {
		return allocator.Service{}, err
	}
	s := allocator.Service{
		Key:                   keyOf(svc),
		RequestedIPs:          ips,
		RequestedPool:         strings.TrimSpace(svc.Annotations[allocator.AnnotationPool]),
		SharingKey:            strings.TrimSpace(svc.Annotations[allocator.AnnotationSharingKey]),
		ExternalTrafficPolicy: string(svc.Spec.ExternalTrafficPolicy),
		Selector:              svc.Spec.Selector,
		Labels:                svc.Labels,
	}
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(v1.ProtocolTCP)
		}
		s.Ports = append(s.Ports, allocator.Port{Protocol: proto, Port: p.Port})
	}
	if svc.Spec.IPFamilyPolicy != nil {
		s.IPFamilyPolicy = allocator.FamilyPolicy(*svc.Spec.IPFamilyPolicy)
	}
	for _, f := range svc.Spec.IPFamilies {
		s.IPFamilies = append(s.IPFamilies, allocator.Family(f))
	}
	if c.namespaces != nil {
		if ns, err := c.namespaces.Get(svc.Namespace); err == nil {
			s.NamespaceLabels = ns.Labels
		}
	}
	return s, nil
}

// ingressIPs are the addresses in svc's status.
func ingressIPs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// statusFor is the status for ips, with ipMode VIP set explicitly: the
// apiserver defaults a missing ipMode, so leaving it out would make every
// sync see a difference and patch the status again.
func statusFor(ips []netip.Addr) *v1.LoadBalancerStatus {
	st := &v1.LoadBalancerStatus{}
	for _, a := range ips {
		mode := v1.LoadBalancerIPModeVIP
		st.Ingress = append(st.Ingress, v1.LoadBalancerIngress{IP: a.String(), IPMode: &mode})
	}
	return st
}

func describeAssignment(res allocator.Result) string {
	var parts []string
	for i, ip := range res.IPs {
		p := ""
		if i < len(res.Pools) {
			p = res.Pools[i]
		}
		if p == "" {
			parts = append(parts, ip.String()+" (outside every IPPool, kept)")
		} else {
			parts = append(parts, fmt.Sprintf("%s from IPPool %s", ip, p))
		}
	}
	return "assigned " + strings.Join(parts, ", ")
}

// eventReason maps an allocation error to the reason used in Events and the
// failures metric.
func eventReason(err error) string {
	switch allocator.ReasonOf(err) {
	case allocator.ReasonHeldBy:
		return "AddressInUse"
	case allocator.ReasonNotInAnyPool:
		return "AddressOutsidePools"
	case "":
		return EventAllocationFailed
	default:
		return string(allocator.ReasonOf(err))
	}
}

func (c *Controller) event(svc *v1.Service, kind, reason, format string, args ...any) {
	if c.recorder != nil {
		c.recorder.Eventf(svc, kind, reason, format, args...)
	}
}

// kickDesired recomputes the firewall's desired state shortly: changes
// within desiredDebounce are coalesced into one recomputation.
func (c *Controller) kickDesired() {
	c.desiredQueue.AddAfter(desiredKey, desiredDebounce)
}

func (c *Controller) kickPoolStatus() {
	select {
	case c.poolStatCh <- struct{}{}:
	default:
	}
}
