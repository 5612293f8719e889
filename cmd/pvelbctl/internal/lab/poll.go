package lab

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// fatal marks a poll condition error that no retry can fix (a process died).
type fatal struct{ err error }

func (f *fatal) Error() string { return f.err.Error() }

func (f *fatal) Unwrap() error { return f.err }

// poll runs cond every 100 ms until it succeeds, returns a *fatal error, or
// timeout passes; the error names what was awaited and cond's last error.
func poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = cond(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		var f *fatal
		if errors.As(last, &f) {
			return f.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not after %s: %w", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
