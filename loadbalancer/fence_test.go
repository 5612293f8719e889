package loadbalancer

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFenceOpen(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const d = 10 * time.Second
	tests := []struct {
		name          string
		ours, holder  string
		renew, readAt time.Time
		now           time.Time
		open          bool
	}{
		{"leading, fresh", "a", "a", t0, t0, t0.Add(time.Second), true},
		{"not read yet", "", "", time.Time{}, time.Time{}, t0, false},
		{"another replica took over", "a", "b", t0, t0, t0.Add(time.Second), false},
		{"woke up after a pause: last renewal too old", "a", "a", t0, t0, t0.Add(d), false},
		{"renewed, but not read for a lease", "a", "a", t0.Add(20 * time.Second), t0, t0.Add(21 * time.Second), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fenceOpen(tt.ours, tt.holder, tt.renew, tt.readAt, tt.now, d)
			if (err == nil) != tt.open {
				t.Fatalf("fenceOpen = %v, want open %v", err, tt.open)
			}
			if err != nil && !errors.Is(err, errFenced) {
				t.Fatalf("error %v is not errFenced", err)
			}
		})
	}
}

func TestFenceAfter(t *testing.T) {
	for _, tt := range []struct{ lease, poll, want time.Duration }{
		{15 * time.Second, 2 * time.Second, 13 * time.Second},
		{4 * time.Second, 500 * time.Millisecond, 3500 * time.Millisecond},
		{4 * time.Second, 3 * time.Second, 2 * time.Second},
	} {
		if got := fenceAfter(Lease{Duration: tt.lease, Poll: tt.poll}); got != tt.want {
			t.Errorf("fenceAfter(%s, %s) = %s, want %s", tt.lease, tt.poll, got, tt.want)
		}
	}
}

// A replica that was paused finds its fence closed before it reads the
// Lease again, and closed for good once the Lease names another holder.
func TestLeaseFenceAfterAPause(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	holder, renew := "a", now
	f := &leaseFence{lease: Lease{Duration: 4 * time.Second, Poll: 500 * time.Millisecond}, now: func() time.Time { return now },
		read: func(context.Context) (string, time.Time, error) { return holder, renew, nil }}
	if f.check() == nil {
		t.Fatal("open before the Lease was read")
	}
	if err := f.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.check(); err != nil {
		t.Fatalf("closed while leading: %v", err)
	}
	now = now.Add(10 * time.Second) // paused; meanwhile b took over
	holder, renew = "b", now.Add(-time.Second)
	if f.check() == nil {
		t.Fatal("open after a pause, before reading the Lease again")
	}
	if err := f.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.check() == nil {
		t.Fatal("open while the Lease names another holder")
	}
	var none *leaseFence
	if none.check() != nil {
		t.Fatal("no leader election must not fence")
	}
}
