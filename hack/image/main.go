// Command image builds pvelb's multi-platform container image from the
// binaries `make build` cross-compiled, with no container engine and no base
// image to pull, and pushes it to a registry:
//
//	image build --bin-dir DIR --platforms linux/amd64,linux/arm64 --commands a,b \
//	    --version V --revision R --created UNIX --out LAYOUT [--archive FILE]
//	image push [--insecure] LAYOUT registry/name:tag
//
// `make image` and `make push IMAGE=...` run it (Makefile).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: image build|push [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = runBuild(os.Args[2:])
	case "push":
		err = runPush(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want build or push", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func runBuild(args []string) error {
	fs := flag.NewFlagSet("image build", flag.ContinueOnError)
	var o buildOptions
	var platforms, commands, out, archive string
	var created int64
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding <os>_<arch>/<command> for every platform")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	fs.StringVar(&commands, "commands", "", "comma-separated commands to put in "+binDir)
	fs.StringVar(&o.caFile, "ca-file", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to ship (Debian's ca-certificates on the build host)")
	fs.StringVar(&o.version, "version", "dev", "image version label and layout tag")
	fs.StringVar(&o.revision, "revision", "unknown", "image revision label (the commit)")
	fs.Int64Var(&created, "created", 0, "Unix time for every timestamp in the image (the commit's time makes the image reproducible)")
	fs.StringVar(&out, "out", "", "OCI image layout directory to write")
	fs.StringVar(&archive, "archive", "", "also pack the layout into this tar file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.binDir == "" || out == "" || commands == "" {
		return fmt.Errorf("build: --bin-dir, --commands and --out are required")
	}
	o.platforms = strings.Split(platforms, ",")
	o.commands = strings.Split(commands, ",")
	o.created = time.Unix(created, 0).UTC()
	idx, err := buildIndex(o)
	if err != nil {
		return err
	}
	d, err := writeLayout(out, idx, o.version)
	if err != nil {
		return err
	}
	fmt.Printf("image %s: %s (%s)\n", out, d, platforms)
	if archive != "" {
		if err := writeArchive(out, archive, o.created); err != nil {
			return err
		}
		fmt.Printf("archive %s\n", archive)
	}
	return nil
}

func runPush(args []string) error {
	fs := flag.NewFlagSet("image push", flag.ContinueOnError)
	insecure := fs.Bool("insecure", false, "allow a plain-HTTP registry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("push: want LAYOUT IMAGE, got %v", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	d, err := push(ctx, fs.Arg(0), fs.Arg(1), *insecure)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s\n", d)
	return nil
}
