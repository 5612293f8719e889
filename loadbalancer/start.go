package loadbalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/allocator"
	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/loadbalancer/vmledger"
	"github.com/pvelb/pvelb/names"
)

var metav1PatchOptions = metav1.PatchOptions{FieldManager: "pvelb"}

// Initialize starts the Controller with clients from the cloud-provider app's
// client builder. The app calls the provider's Initialize only in the elected
// leader, so everything that writes (allocation, Events, status, Proxmox)
// runs in the leader only. Errors are fatal: without its state pvelb could
// hand out an address twice.
func (c *Controller) Initialize(cb cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	cfg, err := cb.Config("pvelb-loadbalancer")
	if err != nil {
		klog.Fatalf("pvelb loadbalancer: client config: %v", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Fatalf("pvelb loadbalancer: kubernetes client: %v", err)
	}
	events, err := kubernetes.NewForConfig(eventsConfig(cfg))
	if err != nil {
		klog.Fatalf("pvelb loadbalancer: events client: %v", err)
	}
	c.events = events
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		klog.Fatalf("pvelb loadbalancer: dynamic client: %v", err)
	}
	c.expectShared = true
	go func() {
		if err := c.Start(ctx, kube, dyn); err != nil && ctx.Err() == nil {
			klog.Fatalf("pvelb loadbalancer: %v", err)
		}
	}()
}

// eventsConfig is cfg for the Event sink, with a rate limiter of its own.
// Events come in bursts (a Proxmox outage warns on every Service, its end
// tells every Service again); on the client whose writes and quorum reads
// decide addresses they held each ensure back behind them for seconds,
// which kept an edit's clash shown that long. An Event may wait; those may
// not.
func eventsConfig(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.RateLimiter = nil // NewForConfig makes one from QPS and Burst
	return c
}

// Start runs the informers, restores allocations from existing Services and
// then runs the class controller, the firewall reconciler, and the IPPool
// status writer until ctx ends. It returns once the state is restored (or
// failed to be); the loops keep running in the background.
func (c *Controller) Start(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface) error {
	if c.started {
		return errors.New("loadbalancer: already started")
	}
	c.started = true
	c.kube, c.dyn = kube, dyn
	if c.fw != nil && c.opts.RecordNamespace != "" {
		c.record = vmledger.New(kube, c.opts.RecordNamespace)
	}

	events := c.events
	if events == nil {
		events = kube
	}
	bc := record.NewBroadcaster(record.WithContext(ctx))
	bc.StartStructuredLogging(3)
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: events.CoreV1().Events("")})
	c.recorder = bc.NewRecorder(scheme.Scheme, v1.EventSource{Component: "pvelb"})
	go func() { <-ctx.Done(); bc.Shutdown() }()

	factory, err := c.informerFactory(ctx, kube)
	if err != nil {
		return err
	}
	svcInf := factory.Core().V1().Services()
	nodeInf := factory.Core().V1().Nodes()
	nsInf := factory.Core().V1().Namespaces()
	c.services, c.nodes, c.namespaces = svcInf.Lister(), nodeInf.Lister(), nsInf.Lister()
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	poolInf := dynFactory.ForResource(names.IPPools)

	c.class = newClassController(c, svcInf)
	c.admitted = newAdmittedWriter(kube, c.nodes)
	if err := c.watch(svcInf.Informer(), nodeInf.Informer(), poolInf.Informer()); err != nil {
		return err
	}
	if err := waitForIPPools(ctx, dyn); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	dynFactory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer for %v did not sync", typ)
		}
	}
	for typ, ok := range dynFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer for %v did not sync (are the CRDs from manifests/crds applied?)", typ)
		}
	}

	if c.opts.Lease != nil {
		f := newLeaseFence(kube, *c.opts.Lease)
		if err := f.start(ctx); err != nil {
			return err
		}
		c.fence = f
		go f.run(ctx)
	}
	c.poolsChanged(poolInf.Informer().GetStore())
	if err := c.restore(); err != nil {
		return err
	}
	close(c.ready)
	klog.InfoS("LoadBalancer state restored", "services", len(c.assigned), "pools", len(c.pools))

	go c.desired.run(ctx, c.syncDesired)
	go c.leavingLoop(ctx)
	go c.admitted.run(ctx)
	go c.poolStatus.run(ctx, c.writePoolStatuses)
	go c.allocatedPools.run(ctx, c.syncAllocatedPools)
	if c.fw != nil {
		go c.fw.Run(ctx)
	}
	go c.class.run(ctx)
	c.kickDesired()
	c.kickPoolStatus()
	c.kickAllocatedPools()
	return nil
}

// sharedWait bounds the wait for the controller manager's SetInformers,
// which follows Initialize at once; past it pvelb keeps its own copies.
const sharedWait = 10 * time.Second

// SetInformers takes the controller manager's shared informer factory (see
// provider.Cloud.SetInformers).
func (c *Controller) SetInformers(f informers.SharedInformerFactory) {
	select {
	case c.shared <- f:
	default:
	}
}

// informerFactory is the controller manager's factory when this controller
// runs in one (Initialize), so its Services and Nodes are the ones the
// service controller already keeps; else (Start called directly) its own.
func (c *Controller) informerFactory(ctx context.Context, kube kubernetes.Interface) (informers.SharedInformerFactory, error) {
	if !c.expectShared {
		return informers.NewSharedInformerFactory(kube, 0), nil
	}
	select {
	case f := <-c.shared:
		klog.InfoS("Using the controller manager's shared informers for Services and Nodes")
		return f, nil
	case <-time.After(sharedWait):
		klog.InfoS("The controller manager handed over no shared informers; keeping own copies of Services and Nodes")
		return informers.NewSharedInformerFactory(kube, 0), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// watch registers the informer handlers: Service changes re-check leaving
// addresses, Node changes recompute the desired state and put back the
// admitted annotation, IPPool changes rebuild the pools.
func (c *Controller) watch(svcInf, nodeInf, poolInf cache.SharedIndexInformer) error {
	// A Service with leaving addresses is read again whenever it changes:
	// its status may no longer show them.
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, n any) {
			if svc, ok := n.(*v1.Service); ok {
				c.maybeCheckLeaving(svc)
			}
		},
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if svc, ok := o.(*v1.Service); ok {
				c.maybeCheckLeaving(svc)
			}
		},
	}); err != nil {
		return err
	}
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.kickDesired() },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if n, ok := o.(*v1.Node); ok {
				c.admitted.nodeChanged(n.Name, true)
			}
			c.kickDesired()
		},
		UpdateFunc: func(o, n any) {
			on, nn := o.(*v1.Node), n.(*v1.Node)
			if nodeChangeMatters(on, nn) {
				c.kickDesired()
			}
			if on.Annotations[names.AnnotationAdmitted] != nn.Annotations[names.AnnotationAdmitted] {
				c.admitted.nodeChanged(nn.Name, false) // put back if someone else changed it
			}
		},
	}); err != nil {
		return err
	}
	onPool := func(any) { c.poolsChanged(poolInf.GetStore()) }
	if _, err := poolInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPool, DeleteFunc: onPool, UpdateFunc: func(_, n any) { onPool(n) },
	}); err != nil {
		return err
	}
	return nil
}

// waitForIPPools waits until IPPools can be listed: without the CRD the
// informer would never sync; it says so plainly and keeps trying rather
// than fail the whole controller manager.
func waitForIPPools(ctx context.Context, dyn dynamic.Interface) error {
	for {
		_, err := dyn.Resource(names.IPPools).List(ctx, metav1.ListOptions{Limit: 1})
		if err == nil {
			break
		}
		klog.ErrorS(err, "Cannot list IPPools; is the CRD installed (kubectl apply -f manifests/crds)? LoadBalancer Services wait until it is", "resource", names.IPPools.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
		}
	}
	return nil
}

// nodeChangeMatters: only what changes the firewall's desired state.
func nodeChangeMatters(o, n *v1.Node) bool {
	return o.Spec.ProviderID != n.Spec.ProviderID ||
		!labels.Equals(o.Labels, n.Labels) ||
		eligibility.IsLeaving(o) != eligibility.IsLeaving(n) ||
		!slices.Equal(nodeAddrs(o), nodeAddrs(n))
}

// restore replays the addresses in the status of every Service pvelb serves,
// so a restart never moves an address. The allocator restores live Services
// before terminating ones and older before newer: of two that claim one
// address, the other loses it and gets a Warning Event (its next ensure
// picks another). A terminating Service's addresses stay reserved until its
// status no longer shows them.
func (c *Controller) restore() error {
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	var items []allocator.RestoreItem
	byKey := map[allocator.ServiceKey]*v1.Service{}
	for _, svc := range svcs {
		if !c.serves(svc) || len(ingressIPs(svc)) == 0 {
			continue
		}
		req, err := c.toRequest(svc)
		if err != nil {
			// A request that no longer parses still holds its addresses:
			// restore them with the request left out, ensure reports the error.
			req, _ = c.toRequest(&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name}, Spec: svc.Spec})
			req.RequestedIPs = nil
		}
		items = append(items, allocator.RestoreItem{Service: req, Current: ingressIPs(svc), Created: svc.CreationTimestamp.Time,
			Terminating: svc.DeletionTimestamp != nil})
		byKey[req.Key] = svc
	}
	c.mu.Lock()
	conflicts := c.alloc.Restore(items)
	var leaving []allocator.ServiceKey
	for k, svc := range byKey {
		if len(c.alloc.Held(k)) == 0 {
			continue
		}
		c.owners[k] = viaServiceController
		if names.IsClass(svc) {
			c.owners[k] = viaClass
		}
		c.refreshLocked(k)
		if len(c.alloc.Leaving(k)) > 0 {
			leaving = append(leaving, k)
		}
	}
	c.mu.Unlock()
	for _, k := range leaving {
		c.leavingQueue.Add(k)
	}
	for _, cf := range conflicts {
		if svc := byKey[cf.Loser]; svc != nil {
			c.event(svc, v1.EventTypeWarning, names.EventRestoreConflict,
				"address %s is also held by %s, which is older and keeps it; this Service gets another address: %v", cf.Address, cf.Winner, cf.Err)
		}
	}
	return nil
}

// poolsChanged rebuilds the pools from the informer's store.
func (c *Controller) poolsChanged(store cache.Store) {
	var objs []*v1alpha1.IPPool
	for _, o := range store.List() {
		p, err := names.IPPool(o)
		if err != nil {
			klog.ErrorS(err, "Ignoring IPPool")
			continue
		}
		objs = append(objs, p)
	}
	pools := buildPools(objs)
	var ap []allocator.Pool
	for _, name := range sortedKeys(pools) {
		ap = append(ap, pools[name].alloc)
	}
	c.mu.Lock()
	c.pools = pools
	warnings := c.alloc.SetPools(ap)
	c.metrics.outsidePool.Set(float64(len(warnings)))
	seen := map[string]string{}
	var fresh []allocator.Warning
	for _, w := range warnings {
		k := w.Service.String()
		seen[k] += w.Msg + ";"
		if !strings.Contains(c.outsideSeen[k], w.Msg) {
			fresh = append(fresh, w)
		}
	}
	c.outsideSeen = seen
	c.mu.Unlock()
	for _, w := range fresh {
		if svc, err := c.services.Services(w.Service.Namespace).Get(w.Service.Name); err == nil {
			c.event(svc, v1.EventTypeWarning, names.EventOutsidePools, "%s", w.Msg)
		}
	}
	if c.class != nil {
		c.class.requeueUnassigned()
	}
	c.kickDesired()
	c.kickPoolStatus()
	c.kickAllocatedPools()
}

// syncDesired recomputes the firewall's desired state (and the no-eligible-
// node warnings) and hands it to the reconciler. It runs after changes,
// debounced, and again with backoff while some Node's VM could not be
// located for a reason that may pass (Proxmox unreachable, a new VM not
// listed yet): nothing else would bring such a VM into the desired state,
// since Node informers do not resync. It reports whether to try again.
func (c *Controller) syncDesired(ctx context.Context) (retry bool) {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing nodes")
		return true
	}
	// A stable order makes equal desired states compare equal.
	slices.SortFunc(nodes, func(a, b *v1.Node) int { return strings.Compare(a.Name, b.Name) })
	vms := map[string]vmLocation{}
	var noVM []string // Nodes known to have no VM pvelb can manage
	if c.fw != nil {
		for _, n := range nodes {
			if n.Spec.ProviderID == "" {
				noVM = append(noVM, n.Name) // set when the Node is initialised: an update event follows
				continue
			}
			loc, err := c.locator.Locate(ctx, n.Spec.ProviderID)
			switch {
			case err == nil:
				vms[n.Name] = loc
				continue
			case errors.Is(err, errListFailed):
				// Unknown, not absent: keep what the Node says.
				retry = true
			case errors.Is(err, errNotListed):
				noVM = append(noVM, n.Name)
				retry = true
			default: // a foreign providerID or region: only a Node change helps
				noVM = append(noVM, n.Name)
			}
			klog.V(2).InfoS("Node's VM not found; its firewall is left alone and it is not eligible to announce", "node", n.Name, "err", err)
		}
	}
	c.mu.Lock()
	in := desiredInput{Nodes: nodes, VMs: vms, FirewallOff: c.fw == nil, Pools: map[string]poolView{}, Extra: c.opts.Firewall.ExtraAddresses}
	for name, p := range c.pools {
		in.Pools[name] = p.view
	}
	for _, k := range sortedServiceKeys(c.assigned) {
		ips := c.assigned[k]
		sv := serviceVIPs{Key: k.String(), Addrs: ips}
		for _, a := range ips {
			sv.Pools = append(sv.Pools, poolOfAddr(c.pools, a))
		}
		in.Services = append(in.Services, sv)
	}
	desired, problems := buildDesired(in)
	newProblems, _ := c.noNode.update(problems)
	c.metrics.noEligibleNode.Set(float64(len(problems)))
	c.nodeVMs = vms
	c.mu.Unlock()

	for _, k := range newProblems {
		if svc := c.serviceByKey(k); svc != nil {
			c.event(svc, v1.EventTypeWarning, names.EventNoEligibleNode, "%s", problems[k])
		}
	}
	if c.admitted != nil {
		if c.fw == nil {
			// No filter pvelb knows of: every Node may announce.
			all := eligibility.AdmitAll().String()
			for _, n := range nodes {
				c.admitted.set(n.Name, &all)
			}
		}
		for _, name := range noVM {
			c.admitted.set(name, nil) // no VM admits anything for it
		}
	}
	if c.fw == nil {
		return retry
	}
	if !c.recordVMs(ctx, desired.VMs) {
		return true
	}
	if c.lastDesired != nil && reflect.DeepEqual(*c.lastDesired, desired) {
		return retry // the reconciler has it; its resync repairs drift
	}
	if err := c.fw.SetDesired(desired); err != nil {
		klog.ErrorS(err, "Firewall desired state refused")
		return retry
	}
	if c.recorded != nil {
		// VMs recorded by an earlier leader whose Nodes are gone now (deleted
		// while no replica led): their entries are removed.
		c.fw.Retire(c.recorded)
		c.recorded = nil
	}
	c.lastDesired = &desired
	c.metrics.firewallDesiredAt.SetToCurrentTime()
	return retry
}

// recordVMs keeps the record of the VMs that may hold pvelb's entries
// (vmledger) a superset of them before the reconciler may write to a new
// one: the VMs known to the reconciler, those desired now and, until they
// are retired, those recorded before this replica led. It reports whether
// the desired state may go to the reconciler; a record pvelb is not
// allowed to keep (RBAC of an older install) is given up with an error
// log, not made a reason to admit no VIP.
func (c *Controller) recordVMs(ctx context.Context, desired []firewall.VM) bool {
	if c.record == nil {
		return true
	}
	giveUp := func(err error) bool {
		klog.ErrorS(err, "Not allowed to keep the record of the VMs with pvelb's IPSet entries; "+
			"the VM of a Node deleted while no pvelb-ccm leads keeps its entries (grant configmaps get, create and update, see manifests/ccm-rbac.yaml)")
		c.record, c.recorded = nil, nil
		return true
	}
	if !c.recordRead {
		vms, err := c.record.Load(ctx)
		if apierrors.IsForbidden(err) {
			return giveUp(err)
		}
		if err != nil {
			klog.ErrorS(err, "Reading the record of the VMs with pvelb's IPSet entries; retrying")
			return false
		}
		c.recordRead, c.recorded = true, vms
		if c.recorded == nil {
			c.recorded = []firewall.VM{}
		}
	}
	err := c.record.Save(ctx, vmledger.Union(c.fw.Known(), c.recorded, desired))
	if apierrors.IsForbidden(err) {
		return giveUp(err)
	}
	if err != nil {
		klog.ErrorS(err, "Retrying")
		return false
	}
	return true
}

// onFirewallResult turns a reconcile pass into Events: a Warning naming the
// VM and Proxmox's answer when a Service's VIPs could not be admitted (once
// per distinct failure), a Normal Event when that is repaired.
func (c *Controller) onFirewallResult(res firewall.Result) {
	errs := res.ServiceErrors()
	failing := map[string]string{}
	for svc, list := range errs {
		var msgs []string
		for _, e := range list {
			msgs = append(msgs, e.Error())
		}
		slices.Sort(msgs)
		failing[svc] = strings.Join(slices.Compact(msgs), "; ")
	}
	c.mu.Lock()
	warn, recovered := c.fwFailing.update(failing)
	c.metrics.firewallFailing.Set(float64(len(failing)))
	admitted := map[string]*string{}
	for _, s := range res.Scopes {
		if s.VM == nil || s.VM.Retired || s.Admission == nil {
			continue // unknown: the Node keeps what it says
		}
		if loc, ok := c.nodeVMs[s.VM.Node]; ok && loc.Region == s.Region && loc.Ref.VMID == s.VM.Ref.VMID {
			admitted[s.VM.Node] = admittedValue(s.Admission)
		}
	}
	c.mu.Unlock()
	if c.admitted != nil {
		for node, v := range admitted {
			c.admitted.set(node, v)
		}
	}
	for _, k := range warn {
		if svc := c.serviceByKey(k); svc != nil {
			c.event(svc, v1.EventTypeWarning, names.EventFirewallFailed,
				"Proxmox refused to admit the address in a firewall IPSet (the address stays assigned; pvelb retries): %s", failing[k])
		}
	}
	for _, k := range recovered {
		if svc := c.serviceByKey(k); svc != nil {
			c.event(svc, v1.EventTypeNormal, names.EventFirewallOK, "the Proxmox firewall IPSets admit the address again")
		}
	}
}

func (c *Controller) serviceByKey(k string) *v1.Service {
	ns, name, ok := strings.Cut(k, "/")
	if !ok || c.services == nil {
		return nil
	}
	svc, err := c.services.Services(ns).Get(name)
	if err != nil {
		return nil
	}
	return svc
}

func sortedServiceKeys(m map[allocator.ServiceKey][]netip.Addr) []allocator.ServiceKey {
	keys := make([]allocator.ServiceKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b allocator.ServiceKey) int { return strings.Compare(a.String(), b.String()) })
	return keys
}

// writePoolStatuses writes IPPool status (usage and conditions) where it
// changed. It reports whether a write must be retried.
func (c *Controller) writePoolStatuses(ctx context.Context) (retry bool) {
	c.mu.Lock()
	usage := map[string]allocator.PoolUsage{}
	all := c.alloc.Usage()
	for _, u := range all {
		usage[u.Name] = u
	}
	c.metrics.setPoolUsage(all)
	type update struct {
		name   string
		status v1alpha1.IPPoolStatus
	}
	var updates []update
	for _, name := range sortedKeys(c.pools) {
		ps := c.pools[name]
		st := v1alpha1.IPPoolStatus{ObservedGeneration: ps.obj.Generation}
		st.IPv4, st.IPv6 = usage[name].APIStatus()
		st.Conditions = slices.Clone(ps.obj.Status.Conditions)
		for _, cond := range poolConditions(ps) {
			meta.SetStatusCondition(&st.Conditions, cond)
		}
		if !statusEqual(ps.obj.Status, st) {
			updates = append(updates, update{name, st})
		}
	}
	c.mu.Unlock()
	for _, u := range updates {
		body, err := json.Marshal(map[string]any{"status": u.status})
		if err != nil {
			klog.ErrorS(err, "Encoding IPPool status", "ippool", u.name)
			continue
		}
		_, err = c.dyn.Resource(names.IPPools).Patch(ctx, u.name, types.MergePatchType, body, metav1PatchOptions, "status")
		if err != nil {
			klog.ErrorS(err, "Writing IPPool status", "ippool", u.name)
			retry = true
		}
	}
	return retry
}

// statusEqual compares two statuses ignoring condition timestamps' precision
// (the apiserver stores seconds).
func statusEqual(a, b v1alpha1.IPPoolStatus) bool {
	if a.ObservedGeneration != b.ObservedGeneration || !familyEqual(a.IPv4, b.IPv4) || !familyEqual(a.IPv6, b.IPv6) ||
		len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for _, ca := range a.Conditions {
		cb := meta.FindStatusCondition(b.Conditions, ca.Type)
		if cb == nil || cb.Status != ca.Status || cb.Reason != ca.Reason || cb.Message != ca.Message || cb.ObservedGeneration != ca.ObservedGeneration {
			return false
		}
	}
	return true
}

func familyEqual(a, b *v1alpha1.FamilyUsage) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
