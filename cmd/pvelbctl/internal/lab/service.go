package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/pvelb/pvelb/loadbalancer/api/v1alpha1"
	"github.com/pvelb/pvelb/names"
	"github.com/pvelb/pvelb/test/datapath"
)

// createService creates the IPPool and a LoadBalancer Service selecting the
// pods, and waits for its EXTERNAL-IP.
func (l *Lab) createService(ctx context.Context) error {
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "IPPool",
		"metadata": map[string]any{"name": poolName},
		"spec": map[string]any{
			"addresses": []any{poolFirst.String() + "-" + poolLast.String()},
			"announce":  map[string]any{"mode": "arp"},
		},
	}}
	if _, err := l.dyn.Resource(names.IPPools).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating IPPool %s: %w", poolName, err)
	}
	l.p.say("IPPool %s: %s-%s, announced by ARP", poolName, poolFirst, poolLast)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: serviceName, Labels: map[string]string{"app": serviceName}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": serviceName},
			Ports: []corev1.ServicePort{{Name: "80-8080", Port: 80, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(datapath.DefaultPodPort)}},
		},
	}
	t0 := time.Now()
	if _, err := l.kube.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s: %w", serviceName, err)
	}
	var got *corev1.Service
	if err := poll(ctx, 60*time.Second, "EXTERNAL-IP of Service "+serviceName, func(ctx context.Context) error {
		s, err := l.kube.CoreV1().Services("default").Get(ctx, serviceName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Status.LoadBalancer.Ingress) == 0 || s.Status.LoadBalancer.Ingress[0].IP == "" {
			return errors.New("no EXTERNAL-IP yet")
		}
		got = s
		return nil
	}); err != nil {
		return err
	}
	vip, err := netip.ParseAddr(got.Status.LoadBalancer.Ingress[0].IP)
	if err != nil {
		return err
	}
	l.vip = vip
	tw := l.table()
	tw.row("NAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)")
	tw.row("%s\t%s\t%s\t%s\t80:%d/TCP", got.Name, got.Spec.Type, got.Spec.ClusterIP, vip, got.Spec.Ports[0].NodePort)
	tw.print()
	l.p.say("EXTERNAL-IP %s assigned %s after the Service was created (pool %s)", vip, since(t0), got.Annotations[names.AnnotationAllocatedPool])
	l.p.say("kube-proxy on every node now DNATs %s:80 to the pods; an announcer answers ARP for it", vip)
	return nil
}
