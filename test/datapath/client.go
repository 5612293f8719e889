package datapath

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/pvelb/pvelb/test/netlab"
)

// Answer is what a pod's HTTP server said.
type Answer struct {
	Pod  string
	Node string
	// From is the client address the pod saw: the client's own under
	// externalTrafficPolicy Local, a node's after kube-proxy masqueraded
	// the connection under Cluster.
	From string
}

// ParseAnswer reads a pod's answer line "pod=<name> node=<node> from=<ip>".
func ParseAnswer(body string) (Answer, error) {
	var a Answer
	for _, f := range strings.Fields(body) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pod":
			a.Pod = v
		case "node":
			a.Node = v
		case "from":
			a.From = v
		}
	}
	if a.Pod == "" || a.Node == "" {
		return a, fmt.Errorf("not a pod's answer: %q", body)
	}
	return a, nil
}

// Get sends one HTTP GET from inside a lab host's namespace (the client)
// on a new connection, so every call is a new load-balancing decision for
// kube-proxy, and returns the pod's answer.
func Get(ctx context.Context, from *netlab.Host, url string, timeout time.Duration) (Answer, error) {
	tr := &http.Transport{DialContext: from.DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: timeout, Transport: tr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Answer{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return Answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Answer{}, fmt.Errorf("GET %s from %s: %s: %s", url, from.Name, resp.Status, strings.TrimSpace(string(body)))
	}
	return ParseAnswer(string(body))
}
