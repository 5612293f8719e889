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

// TestSyncLoopBoundsItsShare: under a stream of kicks, a slow sync takes at
// most about syncShare of the time, not all of it.
func TestSyncLoopBoundsItsShare(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := newSyncLoop("test", time.Millisecond, time.Millisecond, time.Millisecond)
	const pass = 20 * time.Millisecond
	var busy atomic.Int64
	go l.run(ctx, func(context.Context) bool {
		time.Sleep(pass)
		busy.Add(int64(pass))
		return false
	})
	start := time.Now()
	for time.Since(start) < 600*time.Millisecond {
		l.kick()
		time.Sleep(2 * time.Millisecond)
	}
	share := float64(busy.Load()) / float64(time.Since(start))
	if share > syncShare+0.1 {
		t.Errorf("syncing took %.0f%% of the time under a stream of kicks, want about %.0f%%", 100*share, 100*syncShare)
	}
	if share < syncShare/2 {
		t.Errorf("syncing took only %.0f%% of the time: kicks were lost", 100*share)
	}
}
