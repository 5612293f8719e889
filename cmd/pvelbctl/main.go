// Command pvelbctl is pvelb's operator CLI:
//
//	pvelbctl lab      run all of pvelb on this machine in network namespaces (root)
//	pvelbctl doctor   check a real cluster's Proxmox token, VMs, firewall and CRDs
//	pvelbctl status   show pvelb's Services, their VIPs, announcing nodes and pools
//	pvelbctl import   turn a cluster's MetalLB or Cilium configuration into pvelb's
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/pvelb/pvelb/cmd/internal/buildinfo"
)

const usage = `pvelbctl: operator CLI of pvelb (Proxmox VE load balancer for Kubernetes)

Usage:
  pvelbctl lab     [flags]   start the demo lab on this machine (root); Ctrl-C tears it down
  pvelbctl doctor  [flags]   check a cluster's pvelb setup against its Proxmox VE and say what to fix
  pvelbctl status  [flags]   list pvelb's Services, VIPs, announcing nodes and pool usage
  pvelbctl import  metallb|cilium [-o yaml | --apply]
                             print (or apply) IPPools and BGPPeers equivalent to MetalLB's or Cilium's
  pvelbctl version           print the version and commit (also: --version)

Run "pvelbctl <command> --help" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a command and returns the exit code: 0 ok, 1 the
// command failed (doctor: problems found), 2 usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(stdout, buildinfo.String("pvelbctl"))
		return 0
	}
	cmds := map[string]func(context.Context, []string, io.Writer) error{
		"lab":    runLab,
		"doctor": runDoctor,
		"status": runStatus,
		"import": runImport,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pvelbctl: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "pvelbctl %s: %v\n", args[0], err)
		return 2
	case errors.Is(err, errProblemsFound):
		return 1
	default:
		fmt.Fprintf(stderr, "pvelbctl %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a bad flag or argument.
type usageError struct{ error }

// errProblemsFound is doctor's exit status when its report lists problems
// (the report itself says what they are).
var errProblemsFound = errors.New("problems found")

func parseFlags(fs *pflag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(stdout)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return nil
}
