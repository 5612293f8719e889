package convert

import (
	"bytes"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// Objects returns the converted IPPools and BGPPeers as objects to print
// or apply: pools first, each kind by name, without the empty status and
// creation time a typed object carries.
func (r Result) Objects() ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	add := func(obj any) error {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{Object: m}
		unstructured.RemoveNestedField(u.Object, "status")
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		out = append(out, u)
		return nil
	}
	for i := range r.Pools {
		if err := add(&r.Pools[i]); err != nil {
			return nil, err
		}
	}
	for i := range r.Peers {
		if err := add(&r.Peers[i]); err != nil {
			return nil, err
		}
		if r.Peers[i].Spec.HoldTime.Duration == 0 {
			// Not set: the CRD's default applies (a typed zero would
			// say 0s, no keepalives).
			unstructured.RemoveNestedField(out[len(out)-1].Object, "spec", "holdTime")
		}
	}
	return out, nil
}

// YAML writes the notes as comments, one line each, then the objects as
// YAML documents: `kubectl apply -f` takes the output as it is.
func (r Result) YAML() ([]byte, error) {
	var b bytes.Buffer
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "# %s\n", n)
	}
	objs, err := r.Objects()
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}
