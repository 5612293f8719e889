package instances

import (
	"context"
	"sync"
	"time"
)

// ttlCache remembers successful fetches for ttl and shares one in-flight
// fetch among concurrent callers of the same key, so a resync over many Nodes
// costs one Proxmox call per key and period. Errors are never cached.
type ttlCache[K comparable, V any] struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[K]cacheEntry[V]
	calls   map[K]*cacheCall[V]
}

type cacheEntry[V any] struct {
	val     V
	fetched time.Time
}

type cacheCall[V any] struct {
	done    chan struct{}
	val     V
	err     error
	started time.Time
}

func newTTLCache[K comparable, V any](ttl time.Duration, now func() time.Time) *ttlCache[K, V] {
	return &ttlCache[K, V]{ttl: ttl, now: now, entries: map[K]cacheEntry[V]{}, calls: map[K]*cacheCall[V]{}}
}

// get returns the cached value for key if younger than ttl (and fresh is
// false), else joins or starts a fetch. The fetch runs detached from the
// first caller's cancellation so that caller giving up does not fail the
// others; each caller still stops waiting when its own ctx ends.
func (c *ttlCache[K, V]) get(ctx context.Context, key K, fresh bool, fetch func(context.Context) (V, error)) (V, error) {
	maxAge := c.ttl
	if fresh {
		maxAge = 0
	}
	v, _, err := c.getWithin(ctx, key, maxAge, fetch)
	return v, err
}

// getWithin is get for a value at most maxAge old (and never older than
// ttl); it also returns when the value was fetched.
func (c *ttlCache[K, V]) getWithin(ctx context.Context, key K, maxAge time.Duration, fetch func(context.Context) (V, error)) (V, time.Time, error) {
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && c.now().Sub(e.fetched) < min(maxAge, c.ttl) {
		c.mu.Unlock()
		return e.val, e.fetched, nil
	}
	call, inflight := c.calls[key]
	if !inflight {
		call = &cacheCall[V]{done: make(chan struct{})}
		c.calls[key] = call
		go c.run(context.WithoutCancel(ctx), key, call, fetch)
	}
	c.mu.Unlock()

	select {
	case <-call.done:
		return call.val, call.started, call.err
	case <-ctx.Done():
		var zero V
		return zero, time.Time{}, ctx.Err()
	}
}

func (c *ttlCache[K, V]) run(ctx context.Context, key K, call *cacheCall[V], fetch func(context.Context) (V, error)) {
	started := c.now()
	call.started = started
	call.val, call.err = fetch(ctx)
	c.mu.Lock()
	delete(c.calls, key)
	if call.err == nil && c.ttl > 0 {
		// Age from the start of the fetch: the data is at least that old.
		c.entries[key] = cacheEntry[V]{val: call.val, fetched: started}
	}
	c.mu.Unlock()
	close(call.done)
}

// forget drops key, e.g. after Proxmox said the object moved or is gone.
func (c *ttlCache[K, V]) forget(key K) {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

// prune drops expired entries so VMs that were deleted do not pin memory.
func (c *ttlCache[K, V]) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for k, e := range c.entries {
		if now.Sub(e.fetched) >= c.ttl {
			delete(c.entries, k)
		}
	}
}
