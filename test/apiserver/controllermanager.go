package apiserver

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DataPathControllers are the kube-controller-manager controllers a lab's data
// path needs, and no more (each one is informers and CPU on shared machines):
//   - endpointslice-controller builds the EndpointSlices kube-proxy and the
//     announcer read, from Services and Pods;
//   - serviceaccount-controller creates each namespace's "default"
//     ServiceAccount, without which the ServiceAccount admission plugin
//     refuses every Pod;
//   - garbage-collector-controller deletes the EndpointSlices of a deleted
//     Service (they are owned by it): without it a Service recreated under the
//     same name would inherit stale endpoints.
//
// Left out on purpose: node-lifecycle-controller (no kubelet posts Node
// status here, so it would taint every Node unreachable and mark its Pods
// NotReady), node-ipam-controller (labs set Node.spec.podCIDRs themselves),
// endpoints-controller (nothing reads v1 Endpoints) and
// serviceaccount-token-controller (no Pod runs with a token).
var DataPathControllers = []string{
	"endpointslice-controller",
	"serviceaccount-controller",
	"garbage-collector-controller",
}

// ControllerManagerOptions shape a kube-controller-manager.
type ControllerManagerOptions struct {
	// Controllers to run; DataPathControllers when empty.
	Controllers []string
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// StartControllerManager runs the real kube-controller-manager against this
// control plane, in the same network namespace as the apiserver (a control
// plane node runs both), and returns once its /healthz answers. Stop kills it
// before the apiserver. Do not call it concurrently with Stop.
func (cp *ControlPlane) StartControllerManager(ctx context.Context, opts ControllerManagerOptions) error {
	binDir := cp.opts.BinDir
	if _, err := os.Stat(filepath.Join(binDir, "kube-controller-manager")); err != nil {
		// Start found or built kube-apiserver and etcd; this one is built
		// only for labs that run it.
		var berr error
		if binDir, berr = EnsureBinaries(ctx, cp.opts.Log, "kube-controller-manager"); berr != nil {
			return berr
		}
	}
	controllers := opts.Controllers
	if len(controllers) == 0 {
		controllers = DataPathControllers
	}
	port := 10257
	if cp.opts.Netns == "" {
		ports, err := freePorts(cp.opts, 1)
		if err != nil {
			return err
		}
		port = ports[0]
	}
	certDir := filepath.Join(cp.Dir, "kube-controller-manager")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + cp.Kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		// One instance per lab: a Lease would only delay the start by the
		// lease duration after a restart.
		"--leader-elect=false",
		// Its own credentials for every controller: the admin token has the
		// rights, and no serviceaccount-token-controller mints others.
		"--use-service-account-credentials=false",
		"--bind-address=" + cp.opts.BindAddress,
		"--secure-port=" + strconv.Itoa(port),
		// The self-signed serving certificate goes here, not into the
		// default /var/run/kubernetes on the host.
		"--cert-dir=" + certDir,
		"--v=1",
	}
	args = append(args, opts.ExtraArgs...)
	if err := cp.spawn(cp.opts, "kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"), args...); err != nil {
		return err
	}
	url := "https://" + net.JoinHostPort(cp.opts.BindAddress, strconv.Itoa(port)) + "/healthz"
	return cp.waitHealthz(ctx, "kube-controller-manager", url)
}

// waitHealthz polls an HTTPS /healthz with a self-signed certificate, from
// inside the control plane's namespace when it has one (the host cannot
// reach it there).
func (cp *ControlPlane) waitHealthz(ctx context.Context, name, url string) error {
	hc := &http.Client{
		Timeout: 2 * time.Second,
		// The component's certificate is self-signed and only this probe
		// reads it.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	return cp.poll(ctx, name, func(ctx context.Context) string {
		if cp.opts.Netns != "" {
			return curlOK(ctx, cp.opts.Netns, "-k", url)
		}
		return getOK(ctx, hc, url, "")
	})
}
