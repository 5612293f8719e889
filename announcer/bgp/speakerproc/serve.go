package speakerproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

// Speaker is what the child drives: cmd/pvelb-bgp-speaker adapts the gobgp
// speaker (announcer/bgp) to it.
type Speaker interface {
	Start(ctx context.Context) error
	Reconcile(ctx context.Context, d desired.Desired) error
	States(ctx context.Context) (States, error)
	// Stop withdraws every route, waits until the withdrawals are sent and
	// closes the sessions.
	Stop(ctx context.Context) error
}

// ServeOptions tune the child's side.
type ServeOptions struct {
	// ReconcileTimeout bounds one Reconcile (default 10s).
	ReconcileTimeout time.Duration
	// StopTimeout bounds Stop (default 3s).
	StopTimeout time.Duration
}

func (o ServeOptions) withDefaults() ServeOptions {
	if o.ReconcileTimeout <= 0 {
		o.ReconcileTimeout = 10 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 3 * time.Second
	}
	return o
}

// Serve is the child's main loop: the first request must be start, which
// creates and starts the speaker with newSpeaker; then it applies desired
// states until a stop request or the end of in (the parent died), either of
// which stops the speaker, withdrawing its routes first. It returns nil
// after a stop and an error when the speaker cannot start or the stream
// breaks.
func Serve(ctx context.Context, in io.Reader, out io.Writer, newSpeaker func(Config) (Speaker, error), opts ServeOptions) error {
	opts = opts.withDefaults()
	lines := newLineReader(in)
	type read struct {
		req Request
		err error
	}
	reqs := make(chan read)
	go func() {
		for {
			var r Request
			err := lines.next(&r)
			if err == nil {
				err = r.validate()
			}
			select {
			case reqs <- read{r, err}:
			case <-ctx.Done():
				return
			}
			if errors.Is(err, io.EOF) {
				return
			}
		}
	}()

	var first read
	select {
	case first = <-reqs:
	case <-ctx.Done():
		return ctx.Err()
	}
	if first.err != nil {
		return fmt.Errorf("first request: %w", first.err)
	}
	if first.req.Start == nil {
		err := fmt.Errorf("request %d: the first request must be start", first.req.Seq)
		_ = writeLine(out, Reply{Seq: first.req.Seq, Error: err.Error()})
		return err
	}
	sp, err := newSpeaker(*first.req.Start)
	if err == nil {
		err = sp.Start(ctx)
	}
	if err != nil {
		_ = writeLine(out, Reply{Seq: first.req.Seq, Error: err.Error()})
		return err
	}
	if err := writeLine(out, Reply{Seq: first.req.Seq}); err != nil {
		return stopAfter(sp, opts, fmt.Errorf("writing to the announcer: %w", err))
	}

	for {
		select {
		case <-ctx.Done():
			return stopAfter(sp, opts, ctx.Err())
		case r := <-reqs:
			switch {
			case errors.Is(r.err, io.EOF):
				klog.InfoS("The announcer closed the connection; withdrawing BGP routes and exiting")
				return stopAfter(sp, opts, nil)
			case r.err != nil:
				// A bad line is the parent's bug; keep serving what is in
				// effect rather than dropping every route.
				klog.ErrorS(r.err, "Ignoring a request from the announcer")
				if r.req.Seq != 0 {
					_ = writeLine(out, Reply{Seq: r.req.Seq, Error: r.err.Error()})
				}
			case r.req.Stop:
				sctx, cancel := context.WithTimeout(context.Background(), opts.StopTimeout)
				err := sp.Stop(sctx)
				cancel()
				reply := Reply{Seq: r.req.Seq}
				if err != nil {
					reply.Error = err.Error()
				}
				_ = writeLine(out, reply)
				return nil
			case r.req.States:
				st, err := statesOf(ctx, sp)
				reply := Reply{Seq: r.req.Seq, States: st}
				if err != nil {
					reply.Error = err.Error()
				}
				if err := writeLine(out, reply); err != nil {
					return stopAfter(sp, opts, fmt.Errorf("writing to the announcer: %w", err))
				}
			case r.req.Start != nil:
				_ = writeLine(out, Reply{Seq: r.req.Seq, Error: fmt.Sprintf("request %d: the speaker is already started", r.req.Seq)})
			default:
				rctx, cancel := context.WithTimeout(ctx, opts.ReconcileTimeout)
				err := sp.Reconcile(rctx, *r.req.Desired)
				cancel()
				reply := Reply{Seq: r.req.Seq}
				if err != nil {
					reply.Error = err.Error()
				}
				if err := writeLine(out, reply); err != nil {
					return stopAfter(sp, opts, fmt.Errorf("writing to the announcer: %w", err))
				}
			}
		}
	}
}

func statesOf(ctx context.Context, sp Speaker) (*States, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := sp.States(sctx)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// stopAfter stops the speaker (withdrawing its routes) and returns cause.
func stopAfter(sp Speaker, opts ServeOptions, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opts.StopTimeout)
	defer cancel()
	if err := sp.Stop(ctx); err != nil {
		return errors.Join(cause, fmt.Errorf("stopping the speaker: %w", err))
	}
	return cause
}
