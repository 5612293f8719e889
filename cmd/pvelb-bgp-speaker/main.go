// Command pvelb-bgp-speaker is pvelb-announcer's BGP speaker (gobgp) in a
// process of its own: the announcer starts it only once a BGPPeer selects
// its node, so ARP-only nodes never map gobgp. It is not run by hand: it
// reads its configuration and desired state from stdin and reports on
// stdout (package announcer/bgp/speakerproc), and withdraws its routes and
// exits when stdin closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/announcer/bgp"
	"github.com/pvelb/pvelb/announcer/bgp/desired"
	"github.com/pvelb/pvelb/announcer/bgp/speakerproc"
	"github.com/pvelb/pvelb/cmd/internal/buildinfo"
)

func main() {
	fs := flag.NewFlagSet("pvelb-bgp-speaker", flag.ContinueOnError)
	klog.InitFlags(fs)
	version := fs.Bool("version", false, "Print the version and commit and exit.")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *version {
		fmt.Println(buildinfo.String("pvelb-bgp-speaker"))
		return
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "pvelb-bgp-speaker takes no arguments: pvelb-announcer starts it and talks to it over stdin/stdout")
		os.Exit(2)
	}
	// The announcer is in charge: it stops the speaker through the
	// protocol when it gets SIGTERM or SIGINT, and if it dies, stdin closes.
	// A signal to the whole process group must not make the speaker race
	// the announcer's orderly stop.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	ctx := context.Background()
	err := speakerproc.Serve(ctx, os.Stdin, os.Stdout, newSpeaker, speakerproc.ServeOptions{})
	if err != nil {
		klog.ErrorS(err, "pvelb-bgp-speaker failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func newSpeaker(c speakerproc.Config) (speakerproc.Speaker, error) {
	s, err := bgp.New(bgp.Config{
		RouterID:     c.RouterID,
		LocalASN:     c.LocalASN,
		ListenPort:   c.ListenPort,
		NextHopIPv4:  c.NextHopIPv4,
		NextHopIPv6:  c.NextHopIPv6,
		ConnectRetry: c.ConnectRetry,
	})
	if err != nil {
		return nil, err
	}
	return speaker{s}, nil
}

// speaker adapts the gobgp speaker to what speakerproc drives.
type speaker struct{ *bgp.Speaker }

func (s speaker) Reconcile(ctx context.Context, d desired.Desired) error {
	return s.Speaker.Reconcile(ctx, d)
}
