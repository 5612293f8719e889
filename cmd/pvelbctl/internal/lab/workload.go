package lab

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pvelb/pvelb/test/datapath"
)

// podTemplateHash and the pod names are what a Deployment "web" would give
// its ReplicaSet's pods, so the objects read like a real workload's.
const podTemplateHash = "6f9c7d8b5"

var podNames = []string{"web-" + podTemplateHash + "-k2x7q", "web-" + podTemplateHash + "-p9m4z"}

// startPods runs two backends on the first two nodes: namespaces behind
// their node serving HTTP, with Pod objects written as the scheduler and a
// kubelet would. The client's requests through the VIP end up here.
func (l *Lab) startPods(ctx context.Context) error {
	tw := l.table()
	tw.row("POD\tNODE\tIP\tLABELS")
	for i, name := range podNames {
		node := l.vms[i%len(l.vms)].host.Name
		p, err := l.dp.AddPod(ctx, datapath.PodOptions{Name: name, Node: node,
			Labels: map[string]string{"app": serviceName, "pod-template-hash": podTemplateHash}})
		if err != nil {
			return err
		}
		tw.row("%s\t%s\t%s\tapp=%s,pod-template-hash=%s", p.Name, node, p.IPv4, serviceName, podTemplateHash)
	}
	tw.print()
	l.p.say("each pod answers HTTP on port %d with its own and its node's name: pod=<name> node=<node> from=<address>", datapath.DefaultPodPort)
	return nil
}

// curl runs curl in the client namespace on a fresh connection and returns
// the answer's one line, or curl's error.
func (l *Lab) curl(ctx context.Context, timeout time.Duration) (string, error) {
	out, err := l.net.Client.Run(ctx, "curl", "-sS", "--max-time", fmt.Sprintf("%.1f", timeout.Seconds()), l.vipURL())
	out = strings.TrimSpace(out)
	if err != nil {
		return out, fmt.Errorf("%s", out)
	}
	return out, nil
}

func (l *Lab) vipURL() string { return "http://" + l.vip.String() + "/" }
