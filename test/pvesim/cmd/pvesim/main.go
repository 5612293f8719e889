// Command pvesim runs the Proxmox VE API simulator on its own, so that a
// person (or `make demo`) can point pvelb at it.
//
//	pvesim --state state.yaml --ca-out /tmp/pvesim-ca.pem
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/test/pvesim"
)

func main() {
	klog.InitFlags(nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], nil); err != nil {
		klog.ErrorS(err, "pvesim failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

type config struct {
	listen, state, schema        string
	tlsCert, tlsKey, caOut       string
	tlsHosts, tokenOut           string
	latency, writeLatency, lockT time.Duration
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("pvesim", flag.ContinueOnError)
	c := &config{}
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8006", "address to listen on")
	fs.StringVar(&c.state, "state", "", "YAML or JSON file with tokens, VMs and IPSets to start with")
	fs.StringVar(&c.schema, "schema", "", "Proxmox apidata.js schema (default: shared/pve-api/apidata-pve9.1.3.js above the working directory, or $PVELB_PVE_API_DIR)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "server certificate PEM (default: a generated one)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "server key PEM")
	fs.StringVar(&c.caOut, "ca-out", "", "where to write the CA of the generated certificate")
	fs.StringVar(&c.tlsHosts, "tls-hosts", "", "extra comma-separated names/IPs for the generated certificate")
	fs.StringVar(&c.tokenOut, "token-out", "", "when --state has no tokens, write a generated token's ID=SECRET here (mode 0600)")
	fs.DurationVar(&c.latency, "latency", 0, "delay added to every request")
	fs.DurationVar(&c.writeLatency, "write-latency", 0, "delay of every firewall write, under its lock")
	fs.DurationVar(&c.lockT, "lock-timeout", 10*time.Second, "how long a write waits for a firewall lock")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	return c, nil
}

// run serves until ctx ends; ready, if set, gets the API URL once listening.
func run(ctx context.Context, args []string, ready func(url string)) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	state := &pvesim.State{}
	if c.state != "" {
		if state, err = pvesim.LoadState(c.state); err != nil {
			return err
		}
	}
	tokens := state.ServerTokens()
	if len(tokens) == 0 {
		if c.tokenOut == "" {
			return errors.New("--state lists no tokens: give one there, or --token-out FILE to get a generated one")
		}
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		tok := pvesim.Token{ID: pvesim.DefaultTokenID, Secret: hex.EncodeToString(b)}
		if err := os.WriteFile(c.tokenOut, []byte(tok.ID+"="+tok.Secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("--token-out: %w", err)
		}
		tokens = []pvesim.Token{tok}
	}
	sim, err := pvesim.New(pvesim.Options{Tokens: tokens, SchemaFile: c.schema, Latency: c.latency,
		WriteLatency: c.writeLatency, LockTimeout: c.lockT})
	if err != nil {
		return err
	}
	if err := state.Apply(sim); err != nil {
		return fmt.Errorf("--state %s: %w", c.state, err)
	}

	cert, err := serverCert(c)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only: error reason phrases are written on hijacked connections.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
	}
	url := "https://" + ln.Addr().String() + "/api2/json"
	klog.InfoS("pvesim listening", "url", url, "tokenID", tokens[0].ID, "tokens", len(tokens), "vms", len(state.VMs))
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	if ready != nil {
		ready(url)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("pvesim shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func serverCert(c *config) (tls.Certificate, error) {
	if c.tlsCert != "" {
		return tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	}
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if h, _, err := net.SplitHostPort(c.listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		hosts = append(hosts, h)
	}
	for _, h := range strings.Split(c.tlsHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	cert, caPEM, err := pvesim.SelfSignedTLS(hosts...)
	if err != nil {
		return tls.Certificate{}, err
	}
	if c.caOut != "" {
		if err := os.WriteFile(c.caOut, caPEM, 0o644); err != nil {
			return tls.Certificate{}, fmt.Errorf("--ca-out: %w", err)
		}
		klog.InfoS("wrote CA of the generated certificate", "file", c.caOut)
	} else {
		klog.InfoS("generated a certificate but no --ca-out: clients cannot verify it")
	}
	return cert, nil
}
