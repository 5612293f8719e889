// Package kubeapply applies YAML manifests to a real kube-apiserver with
// server-side apply, the way `kubectl apply --server-side` does, so tests of
// pvelb's manifests, Helm chart and examples see the apiserver's own schema
// validation, defaulting and admission (including Pod Security).
package kubeapply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// FieldManager is the server-side apply field manager the tests use.
const FieldManager = "pvelb-tests"

// Decode splits a multi-document YAML (or JSON) stream into objects. Empty
// documents (comments only) are skipped; a document without apiVersion or
// kind is an error naming its position, as kubectl would refuse it.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" {
			return nil, fmt.Errorf("document %d: apiVersion and kind are required", i)
		}
		out = append(out, u)
	}
}

// Describe names an object for messages: Kind namespace/name.
func Describe(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return u.GetKind() + " " + ns + "/" + u.GetName()
	}
	return u.GetKind() + " " + u.GetName()
}

// Applier applies objects to one apiserver.
type Applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// New builds an Applier for the cluster cfg points at.
func New(cfg *rest.Config) (*Applier, error) {
	// Pod Security warnings for the announcer are expected (the namespace
	// warns at "restricted"); tests assert admission, not log lines.
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = rest.NoWarnings{}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Resource returns the client for u's kind, namespaced when the kind is.
func (a *Applier) Resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		// A kind registered since the last discovery (a CRD just applied).
		a.mapper.Reset()
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", Describe(u), err)
		}
	}
	if m.Scope.Name() == "namespace" {
		ns := u.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		return a.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return a.dyn.Resource(m.Resource), nil
}

// Apply server-side applies each object in order; with dryRun the apiserver
// validates and admits but stores nothing. The first failure is returned,
// naming the object.
func (a *Applier) Apply(ctx context.Context, objs []*unstructured.Unstructured, dryRun bool) error {
	for _, u := range objs {
		if err := a.ApplyOne(ctx, u, dryRun); err != nil {
			return err
		}
	}
	return nil
}

// ApplyOne server-side applies one object.
func (a *Applier) ApplyOne(ctx context.Context, u *unstructured.Unstructured, dryRun bool) error {
	ri, err := a.Resource(u)
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := ri.Apply(ctx, u.GetName(), u, opts); err != nil {
		return fmt.Errorf("applying %s (dry-run=%t): %w", Describe(u), dryRun, err)
	}
	return nil
}

// ApplyCRDs applies the CustomResourceDefinitions among objs for real and
// waits (bounded by timeout) until each is Established, so objects of those
// kinds can be applied next. It returns the objects that are not CRDs.
func (a *Applier) ApplyCRDs(ctx context.Context, objs []*unstructured.Unstructured, timeout time.Duration) ([]*unstructured.Unstructured, error) {
	var rest []*unstructured.Unstructured
	var names []string
	for _, u := range objs {
		if u.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			rest = append(rest, u)
			continue
		}
		if err := a.ApplyOne(ctx, u, false); err != nil {
			return nil, err
		}
		names = append(names, u.GetName())
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
			got, err := a.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return nil, fmt.Errorf("CRD %s not established within %s: %w", name, timeout, err)
		}
	}
	a.mapper.Reset()
	return rest, nil
}

// Kinds lists "Kind namespace/name" of objs, for assertions and messages.
func Kinds(objs []*unstructured.Unstructured) []string {
	out := make([]string, 0, len(objs))
	for _, u := range objs {
		out = append(out, Describe(u))
	}
	return out
}

// Find returns the object of that kind and name (any namespace), or nil.
func Find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, u := range objs {
		if strings.EqualFold(u.GetKind(), kind) && u.GetName() == name {
			return u
		}
	}
	return nil
}

// ServiceAccountUser is the user name and groups the apiserver gives a
// ServiceAccount's tokens, for SubjectAccessReviews about it.
func ServiceAccountUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}
