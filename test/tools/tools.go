//go:build tools

// Package tools pins the binaries the test harness builds with `go build`:
// etcd and kube-apiserver for every integration test, kube-proxy and
// kube-controller-manager for the data-path labs, kubectl for the demo.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
