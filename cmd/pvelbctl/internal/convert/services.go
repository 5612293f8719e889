package convert

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/pvelb/pvelb/names"
)

// ServiceNotes names the LoadBalancer Services that would not keep their
// address, or not be served, once pvelb replaces the other load balancer:
// those sharing an address with a Service of another namespace (pvelb's
// sharing keys are per namespace; the older Service keeps the address, as
// pvelb-ccm decides at start) and those of another load balancer class.
func ServiceNotes(svcs []corev1.Service) []Note {
	var out []Note
	byIP := map[string][]*corev1.Service{}
	for i := range svcs {
		s := &svcs[i]
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		obj := "Service/" + s.Namespace + "/" + s.Name
		if c := s.Spec.LoadBalancerClass; c != nil && *c != names.Class {
			out = append(out, Note{Object: obj, Setting: "spec.loadBalancerClass", Effect: fmt.Sprintf(
				"pvelb serves no Service of class %s, and the class cannot change: recreate the Service without one (or with %s) to have pvelb serve it; its address is not kept", *c, names.Class)})
			continue
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				byIP[in.IP] = append(byIP[in.IP], s)
			}
		}
	}
	ips := make([]string, 0, len(byIP))
	for ip := range byIP {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	for _, ip := range ips {
		holders := byIP[ip]
		if len(holders) < 2 {
			continue
		}
		// The order pvelb-ccm restores in: older first, then by name.
		sort.Slice(holders, func(i, j int) bool {
			a, b := holders[i], holders[j]
			if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
				return a.CreationTimestamp.Before(&b.CreationTimestamp)
			}
			return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
		})
		keeper := holders[0]
		var others []string
		for _, s := range holders[1:] {
			if s.Namespace != keeper.Namespace {
				others = append(others, s.Namespace+"/"+s.Name)
			}
		}
		if len(others) == 0 {
			continue
		}
		verb := "gets"
		if len(others) > 1 {
			verb = "get"
		}
		out = append(out, Note{Object: "Service/" + keeper.Namespace + "/" + keeper.Name, Setting: "status.loadBalancer.ingress",
			Effect: fmt.Sprintf("%s is shared with %s in another namespace; pvelb's sharing keys are per namespace: this Service keeps %s, %s %s a new address",
				ip, strings.Join(others, ", "), ip, strings.Join(others, ", "), verb)})
	}
	return out
}
