package speakerproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/bgp/desired"
)

// Options configure the parent's side.
type Options struct {
	// Binary is the pvelb-bgp-speaker executable.
	Binary string
	// Args are passed to it (e.g. klog's -v).
	Args []string
	// Config is sent as the start request.
	Config Config
	// Stderr receives the child's logs (default os.Stderr).
	Stderr io.Writer
	// MinBackoff and MaxBackoff bound the pause before restarting a child
	// that died (defaults 1s and 30s; doubled per consecutive failure).
	MinBackoff, MaxBackoff time.Duration
	// StartTimeout bounds the start request (default 15s).
	StartTimeout time.Duration
}

// Client is the parent's handle on the speaker child. It restarts a child
// that dies and re-applies the last desired state to the new one.
type Client struct {
	opts Options

	mu       sync.Mutex
	cur      *child // nil while (re)starting
	last     *desired.Desired
	lastErr  error // why the child is not running, for Reconcile
	stopping bool

	stopSuper chan struct{}
	superDone chan struct{}
}

type child struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	wmu     sync.Mutex
	seq     uint64
	pending map[uint64]chan Reply // under wmu
	exited  chan struct{}         // closed once stdout ends and the process is reaped
	waitErr error
}

// Start starts the child and waits for its speaker to start. From then on
// a supervisor restarts it, with bounded backoff, whenever it dies.
func Start(ctx context.Context, opts Options) (*Client, error) {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	c := &Client{opts: opts, stopSuper: make(chan struct{}), superDone: make(chan struct{})}
	ch, err := c.spawn(ctx)
	if err != nil {
		return nil, err
	}
	c.cur = ch
	go c.supervise(ch)
	return c, nil
}

// spawn starts a child and sends it the start request.
func (c *Client) spawn(ctx context.Context) (*child, error) {
	cmd := exec.Command(c.opts.Binary, c.opts.Args...)
	cmd.Stderr = c.opts.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the BGP speaker %s: %w", c.opts.Binary, err)
	}
	ch := &child{cmd: cmd, stdin: stdin, pending: map[uint64]chan Reply{}, exited: make(chan struct{})}
	go c.readReplies(ch, stdout)
	sctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	cfg := c.opts.Config
	if _, err := ch.call(sctx, Request{Start: &cfg}); err != nil {
		ch.kill()
		return nil, fmt.Errorf("starting the BGP speaker (router ID %s, AS %d, listen port %d): %w", cfg.RouterID, cfg.LocalASN, cfg.ListenPort, err)
	}
	klog.InfoS("BGP speaker process started", "pid", cmd.Process.Pid, "binary", c.opts.Binary)
	return ch, nil
}

func (c *Client) readReplies(ch *child, stdout io.Reader) {
	lines := newLineReader(stdout)
	for {
		var r Reply
		err := lines.next(&r)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				klog.ErrorS(err, "Reading from the BGP speaker process")
			}
			break
		}
		ch.wmu.Lock()
		if w, ok := ch.pending[r.Seq]; ok {
			delete(ch.pending, r.Seq)
			w <- r
		}
		ch.wmu.Unlock()
	}
	_ = ch.stdin.Close()
	ch.waitErr = ch.cmd.Wait()
	close(ch.exited)
}

// call sends a request and waits for its answer.
func (ch *child) call(ctx context.Context, r Request) (Reply, error) {
	w := make(chan Reply, 1)
	ch.wmu.Lock()
	ch.seq++
	r.Seq = ch.seq
	ch.pending[r.Seq] = w
	err := writeLine(ch.stdin, r)
	if err != nil {
		delete(ch.pending, r.Seq)
	}
	ch.wmu.Unlock()
	if err != nil {
		return Reply{}, fmt.Errorf("writing to the BGP speaker process: %w", err)
	}
	select {
	case rep := <-w:
		if rep.Error != "" {
			return rep, errors.New(rep.Error)
		}
		return rep, nil
	case <-ch.exited:
		return Reply{}, fmt.Errorf("the BGP speaker process exited: %v", ch.waitErr)
	case <-ctx.Done():
		ch.wmu.Lock()
		delete(ch.pending, r.Seq)
		ch.wmu.Unlock()
		return Reply{}, fmt.Errorf("waiting for the BGP speaker process: %w", ctx.Err())
	}
}

func (ch *child) kill() {
	_ = ch.cmd.Process.Kill()
	<-ch.exited
}

// supervise restarts the child whenever it dies, until Stop.
func (c *Client) supervise(ch *child) {
	defer close(c.superDone)
	backoff := c.opts.MinBackoff
	for {
		started := time.Now()
		select {
		case <-c.stopSuper:
			return
		case <-ch.exited:
		}
		c.mu.Lock()
		c.cur = nil
		c.lastErr = fmt.Errorf("the BGP speaker process exited (%v); restarting", ch.waitErr)
		c.mu.Unlock()
		if time.Since(started) > time.Minute {
			backoff = c.opts.MinBackoff // it ran fine for a while: not a crash loop
		}
		for {
			klog.ErrorS(ch.waitErr, "BGP speaker process exited; restarting", "in", backoff)
			select {
			case <-c.stopSuper:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.opts.MaxBackoff)
			next, err := c.spawn(context.Background())
			if err != nil {
				klog.ErrorS(err, "Restarting the BGP speaker process")
				c.mu.Lock()
				c.lastErr = err
				c.mu.Unlock()
				continue
			}
			c.mu.Lock()
			if c.stopping {
				c.mu.Unlock()
				next.kill()
				return
			}
			c.cur, c.lastErr = next, nil
			last := c.last
			c.mu.Unlock()
			ch = next
			if last != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := ch.call(ctx, Request{Desired: last}); err != nil {
					klog.ErrorS(err, "Re-applying the BGP state to the restarted speaker")
				}
				cancel()
			}
			break
		}
	}
}

// Reconcile hands d to the speaker and returns its problems. While the
// child is restarting it returns why; the restarted child gets the last d.
func (c *Client) Reconcile(ctx context.Context, d desired.Desired) error {
	c.mu.Lock()
	c.last = &d
	ch, lastErr := c.cur, c.lastErr
	c.mu.Unlock()
	if ch == nil {
		return lastErr
	}
	_, err := ch.call(ctx, Request{Desired: &d})
	return err
}

// States asks the speaker for its sessions' states now, so metrics are
// never stale. While the child is restarting there are no sessions: the
// peers of the last desired state are reported idle, with no routes.
func (c *Client) States(ctx context.Context) (States, error) {
	c.mu.Lock()
	ch, last := c.cur, c.last
	c.mu.Unlock()
	if ch != nil {
		rep, err := ch.call(ctx, Request{States: true})
		if err == nil && rep.States != nil {
			return *rep.States, nil
		}
		if err != nil {
			return States{}, err
		}
	}
	var s States
	if last != nil {
		for _, p := range last.Peers {
			addr, err := netip.ParseAddr(p.Spec.PeerAddress)
			if err != nil {
				continue
			}
			s.Peers = append(s.Peers, PeerState{Name: p.Name, Address: addr.Unmap(), ASN: p.Spec.PeerASN, State: "idle"})
		}
	}
	return s, nil
}

// Stop asks the child to withdraw its routes and close its sessions, waits
// (bounded by ctx) until it exits, and kills it if it does not. Calls after
// the first do nothing.
func (c *Client) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return nil
	}
	c.stopping = true
	ch := c.cur
	c.cur = nil
	c.mu.Unlock()
	close(c.stopSuper)
	<-c.superDone
	if ch == nil {
		return nil
	}
	_, err := ch.call(ctx, Request{Stop: true})
	_ = ch.stdin.Close()
	select {
	case <-ch.exited:
	case <-ctx.Done():
		ch.kill()
		err = errors.Join(err, errors.New("the BGP speaker process did not exit in time; killed"))
	}
	return err
}
