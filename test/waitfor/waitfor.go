// Package waitfor is the one polling helper of pvelb's unit tests: wait
// until a condition holds, failing the test with what was awaited.
package waitfor

import (
	"testing"
	"time"
)

// Interval is how often the condition is checked: short enough for the
// tests that measure how long a change takes to be seen.
const Interval = 5 * time.Millisecond

// Until polls cond until it holds, failing t after limit with what was
// awaited, and returns how long it took.
func Until(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %v waiting for: %s", limit, what)
		}
		time.Sleep(Interval)
	}
	return time.Since(start)
}
