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
		if sync(ctx) && ctx.Err() == nil {
			l.queue.AddRateLimited(key)
		} else {
			l.queue.Forget(key)
		}
		l.queue.Done(key)
	}
}
