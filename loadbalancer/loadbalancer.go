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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/loadbalancer/vmledger"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/instances"
	"github.com/pvelb/pvelb/provider/pve"
)

const (
	defaultReadyTimeout = 30 * time.Second
	vmRefreshPeriod     = 30 * time.Second
	desiredDebounce     = 200 * time.Millisecond
	// leavingRecheck is how often Services with leaving addresses are read
	// again when no event said their status changed.
	leavingRecheck     = 10 * time.Second
	poolStatusDebounce = time.Second
	// poolWriteRetry is how long a failed IPPool status or Service
	// annotation write waits for the next try.
	poolWriteRetry = 5 * time.Second
)

// Options configure New.
type Options struct {
	// Clients are the Proxmox clusters by region (cloud-config clusters[]).
	Clients map[string]pve.Client
	// VMs is pvelb-ccm's InstancesV2 over the same clusters: the firewall
	// locates Nodes' VMs through its cached VM lists. Nil: an uncached one
	// over Clients (tests).
	VMs *instances.Instances
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
	// Lease is pvelb-ccm's leader-election Lease (nil without leader
	// election): allocation and every Service write are fenced by it.
	Lease *Lease
	// RecordNamespace holds the record of the VMs that may hold pvelb's
	// IPSet entries (package vmledger); "" keeps no record.
	RecordNamespace string
}

// Controller is pvelb's LoadBalancer: allocation, status, firewall wiring,
// IPPool status and the pvelb.io/loadbalancer class controller.
type Controller struct {
	opts    Options
	metrics *metrics
	fw      *firewall.Reconciler
	locator *vmLocator
	// record keeps the VMs that may hold pvelb's entries across restarts
	// (nil: none kept); recorded is what it held at start, until retired.
	record     *vmledger.Ledger
	recordRead bool
	recorded   []firewall.VM

	// Set by Start.
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	recorder   record.EventRecorder
	events     kubernetes.Interface // the Event sink's client (eventsConfig); kube when nil
	services   corelisters.ServiceLister
	nodes      corelisters.NodeLister
	namespaces corelisters.NamespaceLister
	class      *classController
	started    bool
	// expectShared: Initialize ran, so SetInformers follows with the
	// controller manager's factory on shared.
	expectShared bool
	shared       chan informers.SharedInformerFactory

	ready chan struct{}
	// desired recomputes the firewall's desired state (syncDesired),
	// backing off retries (a VM Proxmox did not list yet).
	desired *syncLoop
	// poolStatus writes the IPPool statuses (writePoolStatuses).
	poolStatus *syncLoop
	// allocatedPools rewrites names.AnnotationAllocatedPool after pool
	// changes (syncAllocatedPools).
	allocatedPools *syncLoop
	// admitted publishes what each Node's VM admits (set by Start).
	admitted *admittedWriter
	// fence stops allocation and Service writes once this replica may no
	// longer lead (nil: no leader election).
	fence *leaseFence
	// lastDesired is the desired state last handed to the reconciler: an
	// unchanged one is not handed again (each hand-over costs a pass).
	lastDesired *firewall.Desired

	// leavingQueue holds Services with leaving addresses (see
	// allocator.Withdraw) to check against their live status.
	leavingQueue workqueue.TypedRateLimitingInterface[allocator.ServiceKey]

	mu    sync.Mutex // guards everything below
	alloc *allocator.Allocator
	pools map[string]*poolState
	// assigned mirrors what the allocator reserves for each Service (its
	// addresses and the leaving ones): all of them stay admitted in the
	// firewall while a status may show them.
	assigned map[allocator.ServiceKey][]netip.Addr
	// owners says which controller (viaClass or viaServiceController) last
	// ensured each Service: a controller releases only its own allocations,
	// so the service controller's delete path, run late for a Service that
	// became a pvelb-class LoadBalancer meanwhile, cannot release what the
	// class controller just gave it (and the other way round).
	owners map[allocator.ServiceKey]string
	// last Event messages per Service, so a repeated state is not re-announced.
	noNode      reportOnce
	fwFailing   reportOnce
	outsideSeen map[string]string
	// aliasConflicts is the message last given per Service about another
	// load balancer's annotations that pvelb ignores (names.AliasConflicts).
	aliasConflicts map[allocator.ServiceKey]string
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
	if opts.VMs == nil {
		var regions []instances.Region
		for _, name := range sortedKeys(opts.Clients) {
			regions = append(regions, instances.Region{Name: name, Client: opts.Clients[name]})
		}
		vms, err := instances.New(instances.Options{Regions: regions})
		if err != nil {
			return nil, err
		}
		opts.VMs = vms
	}
	c := &Controller{
		opts:           opts,
		metrics:        newMetrics(opts.Registerer),
		locator:        newVMLocator(opts.VMs, vmRefreshPeriod),
		ready:          make(chan struct{}),
		shared:         make(chan informers.SharedInformerFactory, 1),
		desired:        newSyncLoop("pvelb-desired", desiredDebounce, time.Second, vmRefreshPeriod),
		poolStatus:     newSyncLoop("pvelb-pool-status", poolStatusDebounce, poolWriteRetry, poolWriteRetry),
		allocatedPools: newSyncLoop("pvelb-allocated-pool", poolStatusDebounce, poolWriteRetry, poolWriteRetry),
		leavingQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[allocator.ServiceKey](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[allocator.ServiceKey]{Name: "pvelb-leaving"}),
		alloc:       allocator.New(),
		pools:       map[string]*poolState{},
		assigned:    map[allocator.ServiceKey][]netip.Addr{},
		owners:      map[allocator.ServiceKey]string{},
		noNode:      reportOnce{},
		fwFailing:   reportOnce{},
		outsideSeen: map[string]string{},
		nodeVMs:     map[string]vmLocation{},

		aliasConflicts: map[allocator.ServiceKey]string{},
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
	return *svc.Spec.LoadBalancerClass == names.Class
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

// GetLoadBalancer reports what pvelb holds for svc through the service
// controller, even partially (an address held, or only its own annotation
// left), so that the service controller always calls
// EnsureLoadBalancerDeleted and nothing leaks. Only the service controller
// calls it, and only class-less Services are its: a Service of any class,
// pvelb's included, or one the class controller holds addresses for, is
// never reported, so that the service controller's delete path (which it
// also takes for a pvelb-class Service it queued while that Service was
// class-less or ClusterIP) releases nothing of the class controller's.
func (c *Controller) GetLoadBalancer(_ context.Context, _ string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if svc.Spec.LoadBalancerClass != nil {
		return nil, false, nil
	}
	key := keyOf(svc)
	c.mu.Lock()
	ips, owner := c.alloc.Held(key), c.owners[key]
	c.mu.Unlock()
	if owner == viaClass {
		return nil, false, nil
	}
	if len(ips) > 0 {
		return statusFor(ips), true, nil
	}
	if _, ok := names.AllocatedPool(svc); ok {
		return &v1.LoadBalancerStatus{}, true, nil
	}
	return nil, false, nil
}

// EnsureLoadBalancer allocates (or keeps) svc's addresses and returns its
// status. nodes is ignored: the nodes that may announce an address are
// computed from the Node informer with the service controller's predicates
// and the pool's node selector, the same way for both controllers.
func (c *Controller) EnsureLoadBalancer(ctx context.Context, _ string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	return c.ensure(ctx, svc, viaServiceController)
}

// The controllers that ensure Services, as recorded in owners (and in the
// allocations metric's label).
const (
	viaServiceController = "service-controller"
	viaClass             = "class"
)

// UpdateLoadBalancer is called when the set of nodes changed; the firewall's
// desired state follows the Node informer already, so this only nudges it.
func (c *Controller) UpdateLoadBalancer(ctx context.Context, _ string, _ *v1.Service, _ []*v1.Node) error {
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	c.kickDesired()
	return nil
}

// EnsureLoadBalancerDeleted releases svc's addresses if the service
// controller holds them (see GetLoadBalancer); the firewall reconciler then
// removes them from every IPSet once the status no longer shows them.
func (c *Controller) EnsureLoadBalancerDeleted(ctx context.Context, _ string, svc *v1.Service) error {
	if svc.Spec.LoadBalancerClass != nil {
		return nil
	}
	_, err := c.release(ctx, svc, viaServiceController, false)
	return err
}

// ensure allocates (or keeps) svc's addresses for the controller via and
// returns its status. On failure the Service keeps only what it may still
// hold as it is now; whatever else its status shows is taken off the status
// here (the controllers leave the status alone on error), so that two
// Services never show one address they may not share. svc is updated in
// place with pvelb's writes (resourceVersion, annotations), so that the
// caller's next write is conditional on them.
func (c *Controller) ensure(ctx context.Context, svc *v1.Service, via string) (*v1.LoadBalancerStatus, error) {
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := c.fence.check(); err != nil {
		return nil, err
	}
	asked := svc.DeepCopy() // svc follows pvelb's own writes; this stays as the caller read it
	shown := ingressIPs(svc)
	key := keyOf(svc)
	req, err := c.toRequest(svc)
	var res allocator.Result
	c.mu.Lock()
	conflicts := c.aliasConflictsLocked(svc)
	if err == nil {
		c.refreshGroupLocked(req)
		res, err = c.alloc.Assign(req, shown)
	} else {
		// A request that does not parse: keep what may still be held under
		// the rest of the spec (its ports may clash now, say).
		res = c.alloc.Keep(c.bareRequest(svc), shown)
	}
	if err == nil || len(c.alloc.Held(key)) > 0 {
		c.owners[key] = via
	}
	c.refreshLocked(key)
	leaving := len(c.alloc.Leaving(key)) > 0
	c.mu.Unlock()
	if leaving {
		c.leavingQueue.Add(key)
	}
	if conflicts != "" {
		c.event(svc, v1.EventTypeWarning, names.EventAnnotationConflict, "%s", conflicts)
	}
	if err != nil {
		reason := eventReason(err)
		c.metrics.failures.WithLabelValues(reason).Inc()
		c.event(svc, v1.EventTypeWarning, reason, "%v", err)
		klog.InfoS("Address allocation failed", "service", klog.KObj(svc), "reason", reason, "err", err, "kept", res.IPs)
		if !sameAddrs(shown, res.IPs) {
			if perr := c.writeStatus(ctx, svc, res.IPs); perr != nil {
				return nil, fmt.Errorf("%s: %w (and taking the addresses it may no longer hold off its status failed: %v)", reason, err, perr)
			}
			c.event(svc, v1.EventTypeWarning, reason, "the Service shows only %v now: it may not keep the other addresses as it is", res.IPs)
		}
		return nil, fmt.Errorf("%s: %w", reason, err)
	}
	if res.Changed {
		c.metrics.allocations.WithLabelValues(via).Inc()
		c.event(svc, v1.EventTypeNormal, names.EventAllocated, "%s", describeAssignment(res))
		klog.InfoS("Addresses assigned", "service", klog.KObj(svc), "ips", res.IPs, "pools", res.Pools, "via", via)
	}
	for _, n := range res.Notes {
		c.event(svc, v1.EventTypeWarning, names.EventPartialDualStack, "%s", n)
	}
	if err := c.recordPools(ctx, svc, res.Pools); err != nil {
		return nil, err
	}
	c.kickDesired()
	c.kickPoolStatus()
	if c.changedMeanwhile(asked) {
		return nil, errChangedMeanwhile
	}
	return statusFor(res.IPs), nil
}

// writeStatus sets svc's status to ips, conditional on svc's
// resourceVersion (a write based on an older read fails with a Conflict),
// and tells the allocator what the status shows now.
func (c *Controller) writeStatus(ctx context.Context, svc *v1.Service, ips []netip.Addr) error {
	updated := svc.DeepCopy()
	updated.Status.LoadBalancer = *statusFor(ips)
	got, err := c.patchService(ctx, svc, updated)
	if apierrors.IsNotFound(err) {
		c.shown(keyOf(svc), nil)
		return nil
	}
	if err != nil {
		return err
	}
	*svc = *got
	c.shown(keyOf(svc), ingressIPs(got))
	return nil
}

// shown tells the allocator what key's status shows (nil: gone, or none).
func (c *Controller) shown(key allocator.ServiceKey, ips []netip.Addr) {
	c.mu.Lock()
	freed := c.alloc.Shown(key, ips)
	c.refreshLocked(key)
	c.mu.Unlock()
	if freed {
		klog.V(2).InfoS("Addresses no longer shown released", "service", key.String())
		c.freed()
	}
}

// freed follows addresses becoming free: the firewall and the pools' status
// change, and class Services whose allocation failed may get one now (the
// service controller retries its own with backoff).
func (c *Controller) freed() {
	c.kickDesired()
	c.kickPoolStatus()
	if c.class != nil {
		c.class.requeueUnassigned()
	}
}

// refreshLocked updates assigned (and the metric) for key from the
// allocator. c.mu is held.
func (c *Controller) refreshLocked(key allocator.ServiceKey) {
	if held := c.alloc.Held(key); len(held) > 0 {
		c.assigned[key] = held
	} else {
		delete(c.assigned, key)
		delete(c.owners, key)
	}
	c.metrics.services.Set(float64(len(c.assigned)))
}

// leftByServiceController: the service controller holds svc's addresses
// but will never release them, so the class controller (via) may. Its
// finalizer is gone and svc is no longer a class-less LoadBalancer: the
// service controller drops its finalizer without EnsureLoadBalancerDeleted
// from a Service it last saw with a class (a flip to ClusterIP and to a
// pvelb-class LoadBalancer faster than it synced).
func leftByServiceController(svc *v1.Service, owner, via string) bool {
	return owner == viaServiceController && via == viaClass && !servicehelper.HasLBFinalizer(svc) &&
		(svc.Spec.LoadBalancerClass != nil || svc.Spec.Type != v1.ServiceTypeLoadBalancer || svc.DeletionTimestamp != nil)
}

// leftToClass: the service controller holds addresses for svc that it will
// never release (leftByServiceController), so the class controller takes
// the Service up, whatever it is now, to release them.
func (c *Controller) leftToClass(svc *v1.Service) bool {
	key := keyOf(svc)
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.alloc.Held(key)) > 0 && leftByServiceController(svc, c.owners[key], viaClass)
}

// release takes svc's addresses away if the controller via holds them (or
// nobody does), and reports whether it did: a Service another controller
// holds addresses for is left to that controller. The addresses stay
// reserved until svc's status no longer shows them (gone: the Service no
// longer exists, so nothing shows them).
func (c *Controller) release(ctx context.Context, svc *v1.Service, via string, gone bool) (bool, error) {
	if err := c.waitReady(ctx); err != nil {
		return false, err
	}
	if err := c.fence.check(); err != nil {
		return false, err
	}
	key := keyOf(svc)
	c.mu.Lock()
	held := c.alloc.Held(key)
	if owner := c.owners[key]; len(held) > 0 && owner != "" && owner != via && !leftByServiceController(svc, owner, via) {
		c.mu.Unlock()
		klog.V(2).InfoS("Not releasing addresses another controller holds", "service", klog.KObj(svc), "holder", owner, "caller", via)
		return false, nil
	}
	if gone {
		c.alloc.Release(key)
	} else {
		c.alloc.Withdraw(key)
	}
	delete(c.owners, key)
	delete(c.noNode, key.String())
	delete(c.aliasConflicts, key)
	c.refreshLocked(key)
	leaving := len(c.alloc.Leaving(key)) > 0
	c.mu.Unlock()
	if len(held) > 0 {
		klog.InfoS("Addresses released", "service", klog.KObj(svc), "via", via)
	}
	if leaving {
		c.leavingQueue.Add(key)
	}
	if svc.DeletionTimestamp == nil && !gone {
		if err := c.recordPools(ctx, svc, nil); err != nil {
			return true, err
		}
	}
	c.freed()
	return true, nil
}

// leavingLoop frees leaving addresses once a Service's status, read from
// the apiserver (a cache may not have seen a status write yet), no longer
// shows them. Informer events and pvelb's own writes queue the Services;
// a periodic pass catches what no event announces.
func (c *Controller) leavingLoop(ctx context.Context) {
	go func() { <-ctx.Done(); c.leavingQueue.ShutDown() }()
	go func() {
		t := time.NewTicker(leavingRecheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c.mu.Lock()
			var keys []allocator.ServiceKey
			for k := range c.assigned {
				if len(c.alloc.Leaving(k)) > 0 {
					keys = append(keys, k)
				}
			}
			c.mu.Unlock()
			for _, k := range keys {
				c.leavingQueue.Add(k)
			}
		}
	}()
	for {
		key, quit := c.leavingQueue.Get()
		if quit {
			return
		}
		svc, err := c.kube.CoreV1().Services(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			c.shown(key, nil)
			c.leavingQueue.Forget(key)
		case err != nil:
			klog.V(2).InfoS("Reading a Service to free the addresses it no longer shows", "service", key.String(), "err", err)
			c.leavingQueue.AddRateLimited(key)
		default:
			c.shown(key, ingressIPs(svc))
			c.leavingQueue.Forget(key)
		}
		c.leavingQueue.Done(key)
	}
}

// maybeCheckLeaving queues svc if it has leaving addresses: its status may
// have dropped them.
func (c *Controller) maybeCheckLeaving(svc *v1.Service) {
	key := keyOf(svc)
	c.mu.Lock()
	leaving := len(c.alloc.Leaving(key)) > 0
	c.mu.Unlock()
	if leaving {
		c.leavingQueue.Add(key)
	}
}

// recordPools keeps names.AnnotationAllocatedPool in line with the pools the held
// addresses belong to (see allocatedPoolValue; removed when none are held).
func (c *Controller) recordPools(ctx context.Context, svc *v1.Service, pools []string) error {
	have, ok := names.AllocatedPool(svc)
	want, remove := allocatedPoolValue(pools, have, ok)
	if (remove && !ok) || (!remove && ok && have == want) {
		return nil
	}
	// Conditional on the Service as read, like every write pvelb makes to a
	// Service: a replica that lost the lease while paused must not write
	// what it decided from an older state.
	if err := c.fence.check(); err != nil {
		return err
	}
	rv := svc.ResourceVersion
	for attempt := 0; ; attempt++ {
		got, err := c.kube.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, allocatedPoolPatch(want, remove, rv), metav1PatchOptions)
		if err == nil {
			svc.ResourceVersion, svc.Annotations = got.ResourceVersion, got.Annotations
			return nil
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		// The service controller hands EnsureLoadBalancer the Service as it
		// read it before adding its finalizer, so the first write always
		// met a newer version: failing made it retry 5 s later. The value
		// written depends only on this allocation, decided under the lease
		// (the fence is checked again): write it onto the current Service,
		// as long as it is still the same one and still wants an address.
		if !apierrors.IsConflict(err) || attempt == 2 {
			return fmt.Errorf("recording annotation %s: %w", names.AnnotationAllocatedPool, err)
		}
		cur, gerr := c.kube.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			return nil
		}
		if gerr != nil {
			return fmt.Errorf("recording annotation %s: %w", names.AnnotationAllocatedPool, gerr)
		}
		if cur.UID != svc.UID || cur.DeletionTimestamp != nil || cur.Spec.Type != v1.ServiceTypeLoadBalancer {
			return fmt.Errorf("recording annotation %s: %w", names.AnnotationAllocatedPool, err)
		}
		if !remove && c.asksDiffer(svc, cur) {
			// Edited since the addresses were chosen: writing onto it would
			// pass the edit off as what they were chosen for.
			return errChangedMeanwhile
		}
		if err := c.fence.check(); err != nil {
			return err
		}
		rv = cur.ResourceVersion
		if have, ok := names.AllocatedPool(cur); (remove && !ok) || (!remove && ok && have == want) {
			svc.ResourceVersion, svc.Annotations = cur.ResourceVersion, cur.Annotations
			return nil
		}
	}
}

// aliasConflictsLocked returns the message for a Warning Event about the
// annotations of svc that pvelb ignores because another one it reads for the
// same purpose says otherwise, when that message is new: "" when there is
// none or it was given last time. c.mu is held.
func (c *Controller) aliasConflictsLocked(svc *v1.Service) string {
	var parts []string
	for _, cf := range names.AliasConflicts(svc.Annotations) {
		parts = append(parts, cf.String())
	}
	msg := strings.Join(parts, "; ")
	key := keyOf(svc)
	if msg == c.aliasConflicts[key] {
		return ""
	}
	if msg == "" {
		delete(c.aliasConflicts, key)
		return ""
	}
	c.aliasConflicts[key] = msg
	return msg
}

// toRequest converts a Service into the allocator's terms.
func (c *Controller) toRequest(svc *v1.Service) (allocator.Service, error) {
	ips, err := allocator.ParseRequest(svc.Annotations, svc.Spec.LoadBalancerIP)
	if err != nil {
		return allocator.Service{}, err
	}
	_, poolFrom, _ := names.Lookup(svc.Annotations, names.AnnotationPool)
	s := allocator.Service{
		Key:                   keyOf(svc),
		RequestedIPs:          ips,
		RequestedPool:         names.RequestedPool(svc),
		PoolAnnotation:        poolFrom,
		SharingKey:            names.SharingKey(svc),
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

// bareRequest is svc's request without the parts that do not parse (the
// addresses it asks for): what it may keep is judged on the rest.
func (c *Controller) bareRequest(svc *v1.Service) allocator.Service {
	bare, _ := c.toRequest(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name, Labels: svc.Labels}, Spec: svc.Spec})
	bare.RequestedIPs = nil
	bare.Selector, bare.Labels = svc.Spec.Selector, svc.Labels
	bare.SharingKey = names.SharingKey(svc)
	return bare
}

// refreshGroupLocked records the Services req may join as the informer holds
// them now (allocator.Refresh): one edited since its last ensure (its
// sharing key removed, say) is not joined on the strength of what it was.
// A Service req already shares an address with is left as recorded: if its
// edit broke the sharing, it is that Service, the edited one, that must
// move when its own ensure comes, not req (an unrelated edit never moves an
// address). c.mu is held.
func (c *Controller) refreshGroupLocked(req allocator.Service) {
	if c.services == nil {
		return
	}
	held := c.alloc.Held(req.Key)
	for _, k := range c.alloc.Group(req) {
		if slices.ContainsFunc(c.alloc.Held(k), func(ip netip.Addr) bool { return slices.Contains(held, ip) }) {
			continue
		}
		live, err := c.services.Services(k.Namespace).Get(k.Name)
		if err != nil {
			continue // deleted: it shows its address until it is gone, as recorded
		}
		now, err := c.toRequest(live)
		if err != nil {
			now = c.bareRequest(live)
		}
		c.alloc.Refresh(now)
	}
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
		return names.EventAllocationFailed
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
func (c *Controller) kickDesired() { c.desired.kick() }

// kickPoolStatus writes the IPPool statuses shortly.
func (c *Controller) kickPoolStatus() { c.poolStatus.kick() }

// kickAllocatedPools rewrites the allocated-pool annotations shortly.
func (c *Controller) kickAllocatedPools() { c.allocatedPools.kick() }
