package pve

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/klog/v2"
)

// retryPolicy retries transient failures with exponential backoff, bounded
// both in count (maxRetries) and in time (budget), and stops as soon as the
// caller's context ends.
type retryPolicy struct {
	maxRetries int
	initial    time.Duration
	max        time.Duration
	budget     time.Duration
}

// delay is the wait before retry number n (0-based): the exponential step
// with "equal jitter", so concurrent callers spread out but never retry
// immediately.
func (p retryPolicy) delay(n int) time.Duration {
	d := p.initial
	for i := 0; i < n && d < p.max; i++ {
		d *= 2
	}
	d = min(d, p.max)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(half+1)
}

// retryable says whether an error is worth another attempt. Writes are
// retried on the same conditions as reads: Proxmox's lock timeouts and proxy
// errors mean the write did not happen, and the one ambiguous case (a reply
// lost in transit) is made safe per call (see call.duplicateOKOnRetry; a
// repeated delete of a missing entry is a no-op in Proxmox).
func retryable(err error) bool {
	var pe *Error
	if errors.As(err, &pe) {
		// Never a 4xx, even 429: Proxmox does not rate-limit, so a 4xx is a
		// request that will fail the same way again.
		return pe.StatusCode >= 500 && IsTransient(err)
	}
	var ne *NetworkError
	if errors.As(err, &ne) {
		return ne.Transient()
	}
	return false
}

func (p retryPolicy) run(ctx context.Context, cl call, attempt func(n int) error) error {
	start := time.Now()
	for n := 0; ; n++ {
		err := attempt(n)
		if err == nil || !retryable(err) || ctx.Err() != nil || n >= p.maxRetries {
			return err
		}
		d := p.delay(n)
		if time.Since(start)+d > p.budget {
			return err
		}
		klog.FromContext(ctx).V(2).Info("Retrying Proxmox request", "method", cl.method,
			"endpoint", cl.endpoint, "retry", n+1, "delay", d, "err", err.Error())
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return &stoppedError{last: err, cause: ctx.Err()}
		case <-t.C:
		}
	}
}

// stoppedError is the last failure of a call whose retries were cut short by
// the caller's context; both stay visible to errors.Is/As.
type stoppedError struct {
	last  error
	cause error
}

func (e *stoppedError) Error() string {
	return fmt.Sprintf("%v (retries stopped: %v)", e.last, e.cause)
}

func (e *stoppedError) Unwrap() []error { return []error{e.last, e.cause} }
