package firewall

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pvelb/pvelb/provider/config"
	"github.com/pvelb/pvelb/provider/pve"
	"k8s.io/klog/v2"
)

// Defaults for Options.
const (
	DefaultConcurrency = 4
	maxConcurrency     = 64
	// minRetryDelay is the first delay before retrying a failed pass in Run;
	// it doubles up to ResyncPeriod.
	minRetryDelay = 2 * time.Second
)

// Options configure a Reconciler.
type Options struct {
	// ClusterSet is the cluster-level IPSet listing every VIP (lowercase).
	ClusterSet string
	// NICs are the VM NICs (netN) whose ipfilter-netN sets admit VIPs.
	NICs []string
	// AdmitRanges admits whole pool ranges, as minimal CIDRs, instead of
	// single VIPs: far fewer writes, a little less strictness.
	AdmitRanges bool
	// Concurrency bounds how many scopes (VMs, cluster sets) are written at once.
	Concurrency int
	// ResyncPeriod is how often Run reconciles without a change, to repair
	// drift (the service controller does not resync unchanged Services).
	ResyncPeriod time.Duration
	// Metrics records writes, errors, drift repairs; nil records nothing.
	Metrics *Metrics
	// OnResult, when set, is called by Run after every pass (for Events).
	OnResult func(Result)
}

// Reconciler keeps the IPSets of one or more Proxmox clusters in line with a
// desired state. Reconcile makes one pass; Run makes passes on change and
// every ResyncPeriod. It is safe for concurrent use.
type Reconciler struct {
	clients map[string]pve.Client
	opts    Options
	vmSets  []string

	pass    sync.Mutex // one pass at a time
	changed chan struct{}

	mu      sync.Mutex
	desired *normalized
	// retired are VMs that left the desired state and may still hold pvelb
	// entries; they are reconciled with nothing wanted until that succeeds.
	retired map[vmKey]VM
	// inSync holds, per set, a fingerprint of what was wanted when the set was
	// last seen in sync: writes needed for the same wants are drift repairs.
	inSync map[setKey]string
	// admitted holds, per VM set, what it admitted after its last good
	// pass: a failed pass reports that (narrowed to what is still wanted)
	// rather than nothing, so one Proxmox hiccup does not make every node
	// look unable to announce.
	admitted map[setKey]*Admission
}

type setKey struct {
	region string
	vm     pve.VMRef
	set    string
}

// New returns a Reconciler writing through clients (by region).
func New(clients map[string]pve.Client, opts Options) (*Reconciler, error) {
	if len(clients) == 0 {
		return nil, errors.New("clients: at least one Proxmox cluster is needed")
	}
	for region, c := range clients {
		if region == "" || c == nil {
			return nil, fmt.Errorf("clients[%q]: region must not be empty and the client not nil", region)
		}
	}
	if opts.ClusterSet == "" {
		opts.ClusterSet = config.DefaultClusterIPSet
	}
	if err := pve.ValidateIPSetName(opts.ClusterSet); err != nil {
		return nil, fmt.Errorf("clusterSet: %w", err)
	}
	if len(opts.NICs) == 0 {
		opts.NICs = []string{config.DefaultNIC}
	}
	var vmSets []string
	for i, nic := range opts.NICs {
		if !pve.ValidNIC(nic) {
			return nil, fmt.Errorf("nics[%d] %q: must be a VM NIC, net0 to net%d", i, nic, pve.MaxNIC)
		}
		if name := pve.IPFilterSet(nic); !slices.Contains(vmSets, name) {
			vmSets = append(vmSets, name)
		}
	}
	switch {
	case opts.Concurrency < 0 || opts.Concurrency > maxConcurrency:
		return nil, fmt.Errorf("concurrency %d: must be between 1 and %d", opts.Concurrency, maxConcurrency)
	case opts.Concurrency == 0:
		opts.Concurrency = DefaultConcurrency
	}
	switch {
	case opts.ResyncPeriod < 0:
		return nil, fmt.Errorf("resyncPeriod %v: must not be negative", opts.ResyncPeriod)
	case opts.ResyncPeriod == 0:
		opts.ResyncPeriod = config.DefaultResyncPeriod
	}
	return &Reconciler{
		clients:  maps.Clone(clients),
		opts:     opts,
		vmSets:   vmSets,
		changed:  make(chan struct{}, 1),
		retired:  map[vmKey]VM{},
		inSync:   map[setKey]string{},
		admitted: map[setKey]*Admission{},
	}, nil
}

// SetDesired replaces the desired state and wakes Run. The first call must
// carry the complete state (every allocated VIP): until it is made, passes do
// nothing, so a starting controller never removes VIPs it has not re-learnt.
func (r *Reconciler) SetDesired(d Desired) error {
	n, err := normalize(d)
	if err != nil {
		return fmt.Errorf("firewall desired state: %w", err)
	}
	for k := range n.vms {
		if _, ok := r.clients[k.region]; !ok {
			return fmt.Errorf("firewall desired state: VM %d region %q: no Proxmox cluster configured for it", k.ref.VMID, k.region)
		}
	}
	r.mu.Lock()
	if r.desired != nil {
		for k, vm := range r.desired.vms {
			if !n.hasVMID(k) {
				r.retired[k] = vm
			}
		}
	}
	for k := range r.retired {
		if n.hasVMID(k) {
			delete(r.retired, k)
		}
	}
	for k := range r.admitted {
		if _, ok := n.vms[vmKey{k.region, k.vm}]; !ok {
			delete(r.admitted, k)
		}
	}
	r.desired = n
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

// Retire adds VMs that may hold pvelb entries although the desired state
// does not hold them (read back from a record kept across restarts): their
// entries are removed like those of a VM whose Node left while this
// replica ran. A Node deleted while no replica led leaves no other trace.
// VMs the desired state holds, or of a region not configured, are skipped.
func (r *Reconciler) Retire(vms []VM) {
	r.mu.Lock()
	added := false
	for _, vm := range vms {
		k := vmKey{vm.Region, vm.Ref}
		if _, ok := r.clients[vm.Region]; !ok || (r.desired != nil && r.desired.hasVMID(k)) {
			continue
		}
		if _, ok := r.retired[k]; !ok {
			vm.VIPs = nil
			r.retired[k], added = vm, true
		}
	}
	r.mu.Unlock()
	if added {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
}

// Known lists every VM that may hold pvelb entries: the desired ones and
// the retired ones not cleaned yet, by region and VM id, without VIPs.
func (r *Reconciler) Known() []VM {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []VM
	if r.desired != nil {
		for _, vm := range r.desired.vms {
			vm.VIPs = nil
			out = append(out, vm)
		}
	}
	for _, vm := range r.retired {
		vm.VIPs = nil
		out = append(out, vm)
	}
	SortVMs(out)
	return out
}

// SortVMs orders VMs by region, VM id and host.
func SortVMs(vms []VM) {
	slices.SortFunc(vms, func(a, b VM) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		if a.Ref.VMID != b.Ref.VMID {
			return a.Ref.VMID - b.Ref.VMID
		}
		return strings.Compare(a.Ref.Node, b.Ref.Node)
	})
}

// Run reconciles on every SetDesired, every ResyncPeriod, and sooner after a
// failed pass (from 2s, doubling up to ResyncPeriod), until ctx is done.
func (r *Reconciler) Run(ctx context.Context) {
	retry := minRetryDelay
	for {
		res := r.Reconcile(ctx)
		if ctx.Err() != nil {
			return
		}
		if r.opts.OnResult != nil && !res.NotReady {
			r.opts.OnResult(res)
		}
		wait := r.opts.ResyncPeriod
		if res.Err() != nil {
			wait = min(retry, wait)
			retry = min(retry*2, r.opts.ResyncPeriod)
		} else {
			retry = minRetryDelay
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.changed:
			t.Stop()
		case <-t.C:
		}
	}
}

type job struct {
	region  string
	vm      *VM // nil: the cluster set
	retired bool
}

// Reconcile makes one pass over every scope: each region's cluster set and
// each VM's ipfilter sets. Scopes run concurrently (bounded by Concurrency);
// the writes within one scope are sequential.
func (r *Reconciler) Reconcile(ctx context.Context) Result {
	r.pass.Lock()
	defer r.pass.Unlock()

	r.mu.Lock()
	d := r.desired
	retired := maps.Clone(r.retired)
	r.mu.Unlock()
	if d == nil {
		return Result{NotReady: true}
	}

	var jobs []job
	for _, region := range slices.Sorted(maps.Keys(r.clients)) {
		jobs = append(jobs, job{region: region})
	}
	for k, vm := range d.vms {
		jobs = append(jobs, job{region: k.region, vm: &vm})
	}
	for k, vm := range retired {
		vm.VIPs = nil
		jobs = append(jobs, job{region: k.region, vm: &vm, retired: true})
	}

	results := make([]ScopeResult, len(jobs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(r.opts.Concurrency, len(jobs)) {
		wg.Go(func() {
			for i := range next {
				results[i] = r.runJob(ctx, d, jobs[i])
			}
		})
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()

	slices.SortFunc(results, func(a, b ScopeResult) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		switch {
		case a.VM == nil && b.VM == nil:
			return 0
		case a.VM == nil:
			return -1
		case b.VM == nil:
			return 1
		}
		if c := a.VM.Ref.VMID - b.VM.Ref.VMID; c != 0 {
			return c
		}
		return strings.Compare(a.VM.Ref.Node, b.VM.Ref.Node)
	})
	res := Result{Scopes: results}
	if res.Err() == nil {
		r.opts.Metrics.succeeded(float64(time.Now().UnixNano()) / 1e9)
	}
	return res
}

func (r *Reconciler) runJob(ctx context.Context, d *normalized, j job) ScopeResult {
	c := r.clients[j.region]
	if j.vm == nil {
		sr := ScopeResult{Region: j.region, Services: d.services(d.vips)}
		set := r.syncSet(ctx, c, j.region, nil, SetInput{
			Name: r.opts.ClusterSet,
			Want: d.wants(d.vips, r.opts.AdmitRanges),
		}, nil, nil)
		sr.Sets, sr.Err = []SetResult{set}, set.Err
		return sr
	}

	vm := j.vm
	info := &VMInfo{Ref: vm.Ref, Name: vm.Name, Node: vm.Node, Retired: j.retired}
	sr := ScopeResult{Region: j.region, VM: info, Services: d.services(vm.VIPs)}
	wants := d.wants(vm.VIPs, r.opts.AdmitRanges)

	// The firewall options are read at most once per pass, and only when a
	// set is missing while VIPs need admitting.
	var (
		optsRead bool
		ipfilter bool
		optsErr  error
	)
	readIPFilter := func() (bool, error) {
		if !optsRead {
			optsRead = true
			var o *pve.FirewallOptions
			if o, optsErr = c.VMFirewallOptions(ctx, vm.Ref); optsErr == nil && o != nil {
				ipfilter = o.IPFilter
			}
		}
		return ipfilter, optsErr
	}

	nicSeeds := func(set string) ([]netip.Addr, error) {
		f, err := readNICFacts(ctx, c, vm.Ref, strings.TrimPrefix(set, pve.IPFilterSet("")))
		if err != nil {
			return nil, err
		}
		return SeedAddrs(vm.Addresses, f), nil
	}

	var errs []error
	gone := false
	if !j.retired {
		sr.Admission = &Admission{Unfiltered: true} // narrowed by each set below
	}
	for _, name := range r.vmSets {
		set := r.syncSet(ctx, c, j.region, info, SetInput{
			Name:     name,
			VMFilter: true,
			Want:     wants,
			OwnAddrs: vm.Addresses,
		}, readIPFilter, nicSeeds)
		if j.retired && set.Err != nil && vmGone(set.Err) {
			// A deleted VM's firewall went with it: nothing left to clean.
			set.Err, set.State = nil, SetInSync
			set.Notes = append(set.Notes, "VM no longer exists; nothing to clean up")
			gone = true
		}
		sr.Sets = append(sr.Sets, set)
		if set.Err != nil {
			errs = append(errs, set.Err)
		}
		if !j.retired {
			sr.Admission = intersect(sr.Admission, set.Admission)
		}
	}
	sr.Err = errors.Join(errs...)
	if j.retired && (sr.Err == nil || gone) {
		r.mu.Lock()
		k := vmKey{j.region, vm.Ref}
		// SetDesired may have brought the VM back meanwhile; then it is not retired.
		if !r.desired.hasVMID(k) {
			delete(r.retired, k)
		}
		r.mu.Unlock()
	}
	return sr
}

// syncSet reads one set, plans and writes. On a digest conflict (the set
// changed between read and write) it re-reads and re-plans once.
func (r *Reconciler) syncSet(ctx context.Context, c pve.Client, region string, vm *VMInfo, in SetInput,
	readIPFilter func() (bool, error), nicSeeds func(set string) ([]netip.Addr, error)) SetResult {
	scope := pve.ClusterScope
	key := setKey{region: region, set: in.Name}
	if vm != nil {
		scope = pve.VMScope(vm.Ref)
		key.vm = vm.Ref
	}
	res := SetResult{Name: in.Name, Writes: map[ActionKind]int{}}
	fail := func(op string, reason string, err error) SetResult {
		if reason == "" {
			reason = reasonOf(err)
		}
		res.State = SetFailed
		res.Err = &Error{Region: region, VM: vm, Set: in.Name, Op: op, Reason: reason, Err: err}
		r.opts.Metrics.failed(reason)
		r.mu.Lock()
		delete(r.inSync, key)
		if vm != nil {
			res.Admission = r.admitted[key].narrowTo(in.Want)
		}
		r.mu.Unlock()
		klog.ErrorS(err, "Reconciling Proxmox IPSet failed", logKV(region, vm, in.Name, "op", op)...)
		return res
	}
	fp := fingerprint(in)

	for attempt := 0; ; attempt++ {
		entries, exists, err := readSet(ctx, c, scope, in.Name)
		if err != nil {
			return fail("read entries", "", err)
		}
		in.Exists, in.Entries = exists, entries
		if in.VMFilter && !exists && len(in.Want) > 0 {
			on, err := readIPFilter()
			if err != nil {
				return fail("read VM firewall options", "", err)
			}
			in.IPFilter = on
		}
		plan := PlanSet(in)
		if nicSeeds != nil && seedsNeeded(plan) {
			// Seeding: what the NIC itself carries, not the Node's addresses.
			own, err := nicSeeds(in.Name)
			if err != nil {
				return fail("read VM config for the set's own addresses", "", err)
			}
			in.OwnAddrs = own
			plan = PlanSet(in)
		}
		res.Notes = plan.Notes
		for _, n := range plan.Notes {
			klog.V(4).InfoS("Proxmox IPSet note", logKV(region, vm, in.Name, "note", n)...)
		}
		switch plan.State {
		case SetRefused:
			// Known, unlike other failures: the set is missing and the
			// VM's ipfilter is on, so none of the VIPs passes.
			r.setAdmitted(key, vm, &plan)
			res := fail("create set", "unsafe", errors.New(plan.Refusal))
			res.Admission = admissionOf(&plan)
			return res
		case SetChanged:
		default:
			res.State = plan.State
			r.markInSync(key, fp, &res)
			res.Admission = r.setAdmitted(key, vm, &plan)
			return res
		}
		op, err := r.apply(ctx, c, scope, in.Name, plan, &res)
		if err == nil {
			res.State = SetChanged
			if writes(&res) == 0 {
				// Only skipped actions (e.g. a comment this client cannot update).
				res.State = SetInSync
			}
			r.markInSync(key, fp, &res)
			res.Admission = r.setAdmitted(key, vm, &plan)
			klog.InfoS("Reconciled Proxmox IPSet", logKV(region, vm, in.Name,
				"adds", res.Writes[ActionAdd], "deletes", res.Writes[ActionDelete],
				"updates", res.Writes[ActionUpdateComment], "created", res.Writes[ActionCreateSet] > 0)...)
			return res
		}
		if pve.IsConflict(err) && attempt == 0 && ctx.Err() == nil {
			klog.V(2).InfoS("Proxmox IPSet changed meanwhile; reading it again", logKV(region, vm, in.Name, "op", op)...)
			continue
		}
		return fail(op, "", err)
	}
}

// setAdmitted records what a VM's set admits now that plan is carried out,
// and returns it.
func (r *Reconciler) setAdmitted(key setKey, vm *VMInfo, plan *Plan) *Admission {
	a := admissionOf(plan)
	if vm != nil {
		r.mu.Lock()
		r.admitted[key] = a
		r.mu.Unlock()
	}
	return a
}

func admissionOf(plan *Plan) *Admission {
	if plan.State == SetFilterInactive {
		return &Admission{Unfiltered: true}
	}
	return &Admission{Prefixes: slices.Clone(plan.Admits)}
}

// markInSync records that the set now holds what fp describes, and counts a
// drift repair when writes were needed although the wants had not changed
// since the set was last in sync.
func (r *Reconciler) markInSync(key setKey, fp string, res *SetResult) {
	r.mu.Lock()
	prev, had := r.inSync[key]
	r.inSync[key] = fp
	r.mu.Unlock()
	if had && prev == fp && writes(res) > 0 {
		r.opts.Metrics.drift()
		res.Notes = append(res.Notes, "repaired drift: the set was changed outside pvelb")
	}
}

func writes(res *SetResult) int {
	n := 0
	for _, c := range res.Writes {
		n += c
	}
	return n
}

// apply makes the plan's writes in order. A delete or update after an earlier
// write re-reads the set first: every write changes the set's digest, and the
// digest is what protects a concurrent user edit.
func (r *Reconciler) apply(ctx context.Context, c pve.Client, scope pve.Scope, name string, plan Plan, res *SetResult) (string, error) {
	fresh := true
	count := func(k ActionKind) {
		res.Writes[k]++
		r.opts.Metrics.write(k)
		fresh = false
	}
	// current re-reads the entry at cidr; ok is false when it is gone or no
	// longer an entry pvelb may change.
	current := func(cidr string) (pve.IPSetEntry, bool, error) {
		entries, exists, err := readSet(ctx, c, scope, name)
		if err != nil || !exists {
			return pve.IPSetEntry{}, false, err
		}
		for _, e := range entries {
			if e.CIDR == cidr {
				return e, IsOurs(e.Comment) && !IsSeed(e.Comment), nil
			}
		}
		return pve.IPSetEntry{}, false, nil
	}

	for _, a := range plan.Actions {
		if err := ctx.Err(); err != nil {
			return "stopped", err
		}
		switch a.Kind {
		case ActionCreateSet:
			if err := c.CreateIPSet(ctx, scope, name, a.Comment); err != nil && !pve.IsAlreadyExists(err) {
				return "create set", err
			}
			count(a.Kind)
		case ActionAdd:
			err := c.AddIPSetEntry(ctx, scope, name, pve.IPSetEntry{CIDR: a.CIDR, Comment: a.Comment})
			if err != nil && !pve.IsAlreadyExists(err) {
				return "add " + a.CIDR, err
			}
			count(a.Kind)
		case ActionUpdateComment, ActionDelete:
			op := string(a.Kind) + " " + a.CIDR
			digest := a.Digest
			if !fresh {
				e, ok, err := current(a.CIDR)
				if err != nil {
					return "read entries before " + op, err
				}
				if !ok {
					res.Notes = append(res.Notes, fmt.Sprintf("%s: skipped %s: the entry is gone or no longer pvelb's", a.CIDR, a.Kind))
					continue
				}
				digest = e.Digest
			}
			var err error
			if a.Kind == ActionDelete {
				err = c.DeleteIPSetEntry(ctx, scope, name, a.CIDR, digest)
			} else {
				// In place: a delete and re-add would drop the VIP for a moment.
				err = c.UpdateIPSetEntry(ctx, scope, name, pve.IPSetEntry{CIDR: a.CIDR, Comment: a.Comment, Digest: digest})
			}
			if err != nil {
				return op, err
			}
			count(a.Kind)
		}
	}
	return "", nil
}

// readSet returns a set's entries; exists is false when the set does not exist.
func readSet(ctx context.Context, c pve.Client, scope pve.Scope, name string) ([]pve.IPSetEntry, bool, error) {
	entries, err := c.IPSetEntries(ctx, scope, name)
	if err != nil {
		if isMissingSet(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return entries, true, nil
}

// isMissingSet tells "no such IPSet" from other not-found answers such as a VM
// whose config is gone, which must not be mistaken for an absent set.
func isMissingSet(err error) bool {
	var pe *pve.Error
	return pve.IsNotFound(err) && errors.As(err, &pe) && strings.Contains(strings.ToLower(pe.Reason), "ipset")
}

func vmGone(err error) bool {
	return pve.IsNotFound(err) && !isMissingSet(err)
}

func fingerprint(in SetInput) string {
	var b strings.Builder
	for _, w := range uniqueWants(in.Want) {
		b.WriteString(w.Prefix.String())
		b.WriteByte('=')
		b.WriteString(w.Comment)
		b.WriteByte(';')
	}
	b.WriteByte('|')
	for _, a := range uniqueAddrs(in.OwnAddrs) {
		b.WriteString(a.String())
		b.WriteByte(';')
	}
	return b.String()
}

func logKV(region string, vm *VMInfo, set string, kv ...any) []any {
	out := []any{"region", region, "ipset", set}
	if vm != nil {
		out = append(out, "vmid", vm.Ref.VMID, "host", vm.Ref.Node)
		if vm.Name != "" {
			out = append(out, "vmName", vm.Name)
		}
		if vm.Node != "" {
			out = append(out, "node", vm.Node)
		}
	}
	return append(out, kv...)
}
