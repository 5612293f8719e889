package lab

import (
	"context"
	"io"
	"net"
	"sync"
)

// forwarder exposes a TCP server that lives in a lab namespace (the
// apiserver) on the host's loopback, so a plain `kubectl` on the host
// reaches it: every accepted connection is paired with one dialled from
// inside the namespace.
type forwarder struct {
	ln     net.Listener
	target string
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// newForwarder listens on listenAddr (for example 127.0.0.1:6443, or
// 127.0.0.1:0 for any free port).
func newForwarder(listenAddr, target string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*forwarder, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &forwarder{ln: ln, target: target, dial: dial, ctx: ctx, cancel: cancel}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *forwarder) Addr() string { return f.ln.Addr().String() }

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.pipe(c)
		}()
	}
}

func (f *forwarder) pipe(c net.Conn) {
	defer c.Close()
	up, err := f.dial(f.ctx, "tcp", f.target)
	if err != nil {
		return
	}
	defer up.Close()
	stop := context.AfterFunc(f.ctx, func() { _ = c.Close(); _ = up.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// Close stops listening, closes open connections and waits for them.
func (f *forwarder) Close() {
	_ = f.ln.Close()
	f.cancel()
	f.wg.Wait()
}
