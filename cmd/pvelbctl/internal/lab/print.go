package lab

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// printer writes the lab's story for a person: numbered steps with the time
// since the start and how long each took.
type printer struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	n     int
	total int
}

func (p *printer) elapsed() string {
	return fmt.Sprintf("[%6.1fs]", time.Since(p.start).Seconds())
}

// step runs fn as the next numbered step and reports its outcome.
func (p *printer) step(title string, fn func() error) error {
	p.mu.Lock()
	p.n++
	fmt.Fprintf(p.w, "\n%s %d/%d %s\n", p.elapsed(), p.n, p.total, title)
	p.mu.Unlock()
	t0 := time.Now()
	err := fn()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		fmt.Fprintf(p.w, "%s      FAILED after %s: %v\n", p.elapsed(), since(t0), err)
		return err
	}
	fmt.Fprintf(p.w, "%s      done in %s\n", p.elapsed(), since(t0))
	return nil
}

// say prints indented detail lines inside a step.
func (p *printer) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		fmt.Fprintf(p.w, "           %s\n", line)
	}
}

// plain prints without indentation.
func (p *printer) plain(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func since(t time.Time) time.Duration {
	d := time.Since(t)
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// table collects tab-separated rows and prints them aligned, inside a step.
type table struct {
	p   *printer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func (l *Lab) table() *table {
	t := &table{p: l.p}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) row(format string, args ...any) { fmt.Fprintf(t.tw, format+"\n", args...) }

func (t *table) print() {
	_ = t.tw.Flush()
	t.p.say("%s", strings.TrimRight(t.buf.String(), "\n"))
}
