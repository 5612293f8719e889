package netlab

import (
	"fmt"
	"os"
)

// Build makes a lab: a switch namespace with a bridge, opts.Nodes node
// namespaces and a client, after sweeping leftovers of crashed runs. It serves
// tests (through New) and the `pvelbctl lab` demo alike. On error everything
// already created is removed; otherwise the caller owns the lab and must call
// Close. logf, when set, receives teardown problems.
func Build(opts Options, logf func(format string, args ...any)) (_ *Lab, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 0 || opts.Nodes > 50 {
		return nil, fmt.Errorf("netlab: Options.Nodes must be 1..50, got %d", opts.Nodes)
	}
	if err := Sweep(); err != nil && logf != nil {
		logf("netlab: sweeping leftovers: %v", err)
	}
	id := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), labSeq.Add(1))
	l := &Lab{ID: id, Switch: id + "-sw", log: logf}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := l.setupSwitch(); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	for i := 1; i <= opts.Nodes; i++ {
		h, err := l.addHost(fmt.Sprintf("node%d", i), 10+i)
		if err != nil {
			return nil, fmt.Errorf("netlab: %w", err)
		}
		if opts.StrictARP {
			if err := h.emulateStrictARP(); err != nil {
				return nil, fmt.Errorf("netlab: %w", err)
			}
		}
		l.Nodes = append(l.Nodes, h)
	}
	c, err := l.addHost("client", ClientOctet)
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	l.Client = c
	return l, nil
}

// Add is AddHost for a lab made by Build: another namespace on the bridge
// with address .<octet>, or an error.
func (l *Lab) Add(name string, octet int) (*Host, error) {
	return l.addHost(name, octet)
}

// Namespaces lists the names of every namespace the lab holds (hosts and the
// switch), for a caller that checks nothing is left after Close.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.hosts)+1)
	for _, h := range l.hosts {
		out = append(out, h.Netns)
	}
	if l.Switch != "" {
		out = append(out, l.Switch)
	}
	return out
}
