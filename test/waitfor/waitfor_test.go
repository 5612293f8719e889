package waitfor

import (
	"testing"
	"time"
)

type fatalRecorder struct {
	testing.TB
	failed string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestUntil(t *testing.T) {
	n := 0
	if d := Until(t, time.Second, "three polls", func() bool { n++; return n == 3 }); n != 3 || d < 2*Interval {
		t.Errorf("Until returned after %d polls and %v", n, d)
	}
	r := &fatalRecorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		Until(r, 20*time.Millisecond, "never", func() bool { return false })
	}()
	if r.failed == "" {
		t.Error("Until did not fail the test when the condition never held")
	}
}
