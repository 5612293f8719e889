package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is one process of the lab (pvelb-ccm, an announcer) running inside a
// network namespace, with its output in a log file of the state directory.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startInNetns runs bin with args inside netns. The process gets its own
// group, so stopping it also stops anything it forked, and dies with
// pvelbctl (Pdeathsig) if pvelbctl itself is killed.
func startInNetns(netns, logDir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); _ = f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an early exit with the end of the process's log.
func (p *proc) exitError() error {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Errorf("%s exited (%v); end of %s:\n%s", p.name, p.err, p.log, strings.TrimSpace(string(b)))
}

// waitOK polls url (a health endpoint of p) with hc until it answers 200,
// for at most within; it gives up at once if p exits, since then no retry
// can help and the end of p's log says why.
func (p *proc) waitOK(ctx context.Context, hc *http.Client, url string, within time.Duration, what string) error {
	return poll(ctx, within, what, func(ctx context.Context) error {
		if p.exited() {
			return &fatal{p.exitError()}
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %d", path.Base(url), resp.StatusCode)
		}
		return nil
	})
}

// kill sends SIGKILL to the whole group and waits for the exit.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stop asks politely (SIGTERM), then kills after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	p.kill()
}
