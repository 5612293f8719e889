package loadbalancer

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// syncLoop runs a sync of a whole state (the firewall's desired state, the
// IPPool statuses, the allocated-pool annotations) after changes. It is a
// client-go workqueue with a single key: kick queues the key after the
// debounce (kicks meanwhile fold into one run, a kick during a run makes one
// more), and a sync that reports a retry is queued again after the rate
// limiter's delay.
type syncLoop struct {
	queue    workqueue.TypedRateLimitingInterface[string]
	debounce time.Duration
}

// syncShare bounds the share of time a loop spends syncing while kicks keep
// coming: after a sync that took d, the next waits (1/syncShare - 1) x d.
// A whole-state sync costs O(Services x Nodes); with 5000 Services on 50
// Nodes, back-to-back syncs during a burst of creations took the CPU the
// apiserver and the service controller needed, and addresses came three
// times slower than without pvelb. A quarter keeps the firewall converging
// within a few passes of the burst's end.
const syncShare = 0.25

const syncKey = "sync"

// newSyncLoop makes a loop whose retries wait retryMin, doubling up to
// retryMax while they keep failing.
func newSyncLoop(name string, debounce, retryMin, retryMax time.Duration) *syncLoop {
	return &syncLoop{
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryMin, retryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		debounce: debounce,
	}
}

// kick asks for a sync after the debounce. It may be called before run.
func (l *syncLoop) kick() { l.queue.AddAfter(syncKey, l.debounce) }

// run calls sync for each kick until ctx ends.
func (l *syncLoop) run(ctx context.Context, sync func(context.Context) (retry bool)) {
	go func() { <-ctx.Done(); l.queue.ShutDown() }()
	for {
		key, quit := l.queue.Get()
		if quit {
			return
		}
		start := time.Now()
		retry := sync(ctx)
		if retry && ctx.Err() == nil {
			l.queue.AddRateLimited(key)
		} else {
			l.queue.Forget(key)
		}
		// Kicks during the pause fold into one sync after it (the key
		// stays in processing until Done).
		select {
		case <-time.After(time.Duration(float64(time.Since(start)) * (1/syncShare - 1))):
		case <-ctx.Done():
		}
		l.queue.Done(key)
	}
}
