package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Lease names the leader-election Lease of pvelb-ccm, so that the
// LoadBalancer can fence its writes with it (see leaseFence).
type Lease struct {
	Namespace, Name string
	// Duration is --leader-elect-lease-duration: how long a standby waits
	// after the last renewal it saw before it takes over.
	Duration time.Duration
	// Poll is how often the Lease is read (--leader-elect-retry-period).
	Poll time.Duration
}

// leaseFence keeps a replica that lost its lease while paused (SIGSTOP, a
// frozen VM, a long GC or swap stall) from writing once it runs again. The
// cloud-provider app exits when its elector notices the loss, but workers
// that wake up first would write from a state the new leader has since
// changed: give another Service an address the new leader handed out,
// say. A resourceVersion precondition does not help when the paused
// replica's copy of that Service happens to be current.
//
// The fence is open while the Lease, as last read, still names the holder
// it named when this replica started leading, and was renewed (by this
// replica's elector, with this replica's clock) less than a lease duration
// ago, and that read is itself less than a lease duration old. A replica
// that wakes up finds the last renewal it saw too old, so it writes nothing
// until it has read the Lease again, and then sees another holder.
type leaseFence struct {
	lease Lease
	read  func(ctx context.Context) (holder string, renewed time.Time, err error)
	now   func() time.Time

	mu     sync.Mutex
	ours   string    // the holder when this replica started leading
	holder string    // as last read
	renew  time.Time // as last read
	readAt time.Time // when it was last read (local clock)
}

func newLeaseFence(kube kubernetes.Interface, lease Lease) *leaseFence {
	return &leaseFence{
		lease: lease,
		now:   time.Now,
		read: func(ctx context.Context) (string, time.Time, error) {
			l, err := kube.CoordinationV1().Leases(lease.Namespace).Get(ctx, lease.Name, metav1.GetOptions{})
			if err != nil {
				return "", time.Time{}, err
			}
			var holder string
			var renew time.Time
			if l.Spec.HolderIdentity != nil {
				holder = *l.Spec.HolderIdentity
			}
			if l.Spec.RenewTime != nil {
				renew = l.Spec.RenewTime.Time
			}
			return holder, renew, nil
		},
	}
}

// start reads the Lease once: this replica leads (the app calls Initialize
// only then), so the holder it names is this replica.
func (f *leaseFence) start(ctx context.Context) error {
	for {
		err := f.poll(ctx)
		if err == nil {
			f.mu.Lock()
			f.ours = f.holder
			f.mu.Unlock()
			klog.InfoS("Service writes fenced by the leader-election Lease", "lease", f.lease.Namespace+"/"+f.lease.Name, "holder", f.ours)
			return nil
		}
		klog.ErrorS(err, "Reading the leader-election Lease; retrying", "lease", f.lease.Namespace+"/"+f.lease.Name)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (f *leaseFence) poll(ctx context.Context) error {
	holder, renew, err := f.read(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.holder, f.renew, f.readAt = holder, renew, f.now()
	f.mu.Unlock()
	return nil
}

// run reads the Lease every Poll until ctx ends.
func (f *leaseFence) run(ctx context.Context) {
	t := time.NewTicker(f.lease.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.poll(ctx); err != nil && ctx.Err() == nil {
			klog.V(2).InfoS("Reading the leader-election Lease", "err", err)
		}
	}
}

// check returns nil while this replica may write (see fenceOpen).
func (f *leaseFence) check() error {
	if f == nil {
		return nil // no leader election: nothing to fence with
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return fenceOpen(f.ours, f.holder, f.renew, f.readAt, f.now(), fenceAfter(f.lease))
}

// fenceAfter is how long after a renewal (or a read) the fence closes: a
// poll period before a standby may take over, so that a write checked just
// before still lands in time; half the lease when the poll is that long.
func fenceAfter(l Lease) time.Duration {
	if d := l.Duration - l.Poll; d >= l.Duration/2 {
		return d
	}
	return l.Duration / 2
}

var errFenced = errors.New("not writing: this replica may no longer lead")

// fenceOpen is the fence's decision: ours is the holder this replica started
// under, holder and renew the Lease as read at readAt; the fence closes
// duration after either.
func fenceOpen(ours, holder string, renew, readAt, now time.Time, duration time.Duration) error {
	switch {
	case ours == "":
		return fmt.Errorf("%w: the Lease was not read yet", errFenced)
	case holder != ours:
		return fmt.Errorf("%w: the Lease names %q now", errFenced, holder)
	case now.Sub(renew) >= duration:
		return fmt.Errorf("%w: the Lease was last renewed %s ago", errFenced, now.Sub(renew).Round(time.Millisecond))
	case now.Sub(readAt) >= duration:
		return fmt.Errorf("%w: the Lease was last read %s ago", errFenced, now.Sub(readAt).Round(time.Millisecond))
	}
	return nil
}
