package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// exposeAPI forwards the apiserver to loopback and writes a kubeconfig for
// it, so a person can use kubectl from the host without entering a namespace.
func (l *Lab) exposeAPI(context.Context) error {
	port := l.opts.HostAPIPort
	target := net.JoinHostPort(l.ctl.IPv4.Addr().String(), "6443")
	var f *forwarder
	var err error
	if port == 0 {
		if f, err = newForwarder("127.0.0.1:6443", target, l.ctl.DialContext); err != nil {
			f, err = newForwarder("127.0.0.1:0", target, l.ctl.DialContext)
		}
	} else {
		f, err = newForwarder(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), target, l.ctl.DialContext)
	}
	if err != nil {
		return fmt.Errorf("forwarding the apiserver to loopback: %w", err)
	}
	l.fwd = f
	l.onTeardown(f.Close)
	cfg, err := clientcmd.LoadFromFile(l.cp.Kubeconfig)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + f.Addr()
	}
	cfg.Contexts = map[string]*clientcmdapi.Context{"pvelb-lab": {Cluster: firstKey(cfg.Clusters), AuthInfo: firstKey(cfg.AuthInfos)}}
	cfg.CurrentContext = "pvelb-lab"
	l.hostKC = filepath.Join(l.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, l.hostKC); err != nil {
		return err
	}
	// Prove the host kubeconfig works before telling anyone to use it.
	rc, err := clientcmd.BuildConfigFromFlags("", l.hostKC)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if _, err := kc.CoreV1().Services("default").Get(context.Background(), serviceName, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the forwarded apiserver at %s does not answer: %w", f.Addr(), err)
	}
	l.p.say("the apiserver (%s in namespace %s) is forwarded to %s on the host; kubeconfig: %s", target, l.ctl.Netns, f.Addr(), l.hostKC)
	return nil
}

func firstKey[V any](m map[string]V) string {
	for k := range m {
		return k
	}
	return ""
}

func (l *Lab) printAccess() {
	p := l.p
	// Debian 12 packages no kubectl: `make demo` builds one from the same
	// Kubernetes sources as the lab's apiserver.
	kubectl := "kubectl"
	if k := filepath.Join(l.opts.BinDir, "kubectl"); fileExists(k) {
		kubectl = k
		p.plain("\nThe lab is running. Explore it with kubectl (%s, built by `make kubectl`; any recent kubectl works):", k)
	} else {
		p.plain("\nThe lab is running. Explore it with kubectl (`make kubectl` builds one into bin/; any recent kubectl works):")
	}
	p.plain("")
	if l.hostKC == "" {
		p.plain("  (the loopback forwarder did not start: use kubectl inside the lab network, below)")
	}
	p.plain("  export KUBECONFIG=%s", l.hostKC)
	p.plain("  %s get nodes -L topology.kubernetes.io/zone", kubectl)
	p.plain("  %s get service %s; %s describe service %s", kubectl, serviceName, kubectl, serviceName)
	p.plain("  %s get ippools.pvelb.io %s -o yaml", kubectl, poolName)
	p.plain("")
	p.plain("Inside the lab network (the apiserver listens on %s in namespace %s):", l.ctl.IPv4.Addr(), l.ctl.Netns)
	p.plain("  ip netns exec %s %s --kubeconfig %s get nodes", l.ctl.Netns, kubectl, l.cp.Kubeconfig)
	p.plain("  ip netns exec %s curl http://%s/          # the client, answered by a pod", l.net.Client.Netns, l.vip)
	p.plain("  ip netns exec %s ip neigh          # which MAC answers", l.net.Client.Netns)
	p.plain("Logs: %s/*.log", l.dir)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
