package loadbalancer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pvelb/pvelb/test/waitfor"
)

func TestSyncLoopFoldsKicksAndRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := newSyncLoop("test", 50*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond)
	var runs, failures atomic.Int32
	failures.Store(2)
	for range 5 {
		l.kick() // before run, in a burst: one sync
	}
	go l.run(ctx, func(context.Context) bool {
		runs.Add(1)
		return failures.Add(-1) >= 0 // the first two ask for a retry
	})
	waitfor.Until(t, 5*time.Second, "the burst and its two retries", func() bool { return runs.Load() == 3 })
	time.Sleep(200 * time.Millisecond)
	if n := runs.Load(); n != 3 {
		t.Fatalf("%d syncs, want 3 (one for the burst of kicks, two retries)", n)
	}
	l.kick()
	waitfor.Until(t, 5*time.Second, "a sync after a later kick", func() bool { return runs.Load() == 4 })
}
