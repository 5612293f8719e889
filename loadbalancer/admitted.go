package loadbalancer

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/pvelb/pvelb/loadbalancer/eligibility"
	"github.com/pvelb/pvelb/loadbalancer/firewall"
	"github.com/pvelb/pvelb/names"
)

// admittedWriter keeps each Node's pvelb.io/admitted annotation equal to what
// its VM's IP filter admits, which is how the announcer learns where it may
// elect (see package eligibility). It writes a Node only when the wanted
// value differs from the Node in the informer cache, so a resync that changes
// nothing costs no API call, and retries failed writes with backoff.
type admittedWriter struct {
	kube  kubernetes.Interface
	nodes corelisters.NodeLister
	queue workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// want maps Node names to the annotation value they should carry; nil
	// means none. A Node not in the map is left as it is: nothing is known
	// about it yet (after a restart, before its VM's first pass).
	want map[string]*string
}

func newAdmittedWriter(kube kubernetes.Interface, nodes corelisters.NodeLister) *admittedWriter {
	return &admittedWriter{
		kube: kube, nodes: nodes,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pvelb-admitted"}),
		want: map[string]*string{},
	}
}

// set records the value node should carry (nil: no annotation) and queues a
// write when the Node does not carry it.
func (w *admittedWriter) set(node string, value *string) {
	w.mu.Lock()
	w.want[node] = value
	w.mu.Unlock()
	if !w.inPlace(node) {
		w.queue.Add(node)
	}
}

// nodeChanged queues a Node whose annotation differs from what it should be
// (edited by someone else), and forgets deleted Nodes.
func (w *admittedWriter) nodeChanged(name string, deleted bool) {
	if deleted {
		w.mu.Lock()
		delete(w.want, name)
		w.mu.Unlock()
		return
	}
	if !w.inPlace(name) {
		w.queue.Add(name)
	}
}

// inPlace reports whether the cached Node carries what it should, or nothing
// is wanted of it, or it is gone.
func (w *admittedWriter) inPlace(name string) bool {
	w.mu.Lock()
	want, known := w.want[name]
	w.mu.Unlock()
	if !known {
		return true
	}
	n, err := w.nodes.Get(name)
	if err != nil {
		return apierrors.IsNotFound(err)
	}
	cur, has := n.Annotations[names.AnnotationAdmitted]
	if want == nil {
		return !has
	}
	return has && cur == *want
}

func (w *admittedWriter) run(ctx context.Context) {
	defer w.queue.ShutDown()
	go wait.UntilWithContext(ctx, w.worker, time.Second)
	<-ctx.Done()
}

func (w *admittedWriter) worker(ctx context.Context) {
	for {
		name, quit := w.queue.Get()
		if quit {
			return
		}
		if err := w.sync(ctx, name); err != nil {
			klog.ErrorS(err, "Writing the Node's admitted VIPs; retrying", "node", name, "annotation", names.AnnotationAdmitted)
			w.queue.AddRateLimited(name)
		} else {
			w.queue.Forget(name)
		}
		w.queue.Done(name)
	}
}

func (w *admittedWriter) sync(ctx context.Context, name string) error {
	if w.inPlace(name) {
		return nil
	}
	w.mu.Lock()
	want := w.want[name]
	w.mu.Unlock()
	// A merge patch touches this one annotation only; null removes it.
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]*string{names.AnnotationAdmitted: want}}})
	if err != nil {
		return err
	}
	_, err = w.kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, body, metav1PatchOptions)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		v := "<removed>"
		if want != nil {
			v = *want
		}
		klog.V(2).InfoS("Node's admitted VIPs written", "node", name, "annotation", names.AnnotationAdmitted, "value", v)
	}
	return err
}

// admittedValue is the annotation value for what a VM's sets admit.
func admittedValue(a *firewall.Admission) *string {
	v := eligibility.AdmitPrefixes(a.Prefixes).String()
	if a.Unfiltered {
		v = eligibility.AdmitAll().String()
	}
	return &v
}
