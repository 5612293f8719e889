package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/pvelb/pvelb/cmd/pvelbctl/internal/convert"
	"github.com/pvelb/pvelb/names"
)

// importSource is a load balancer pvelbctl import reads: its resources (the
// versions tried in order, for clusters running older or newer releases)
// and the conversion.
type importSource struct {
	what      string
	resources []importResource
	convert   func(map[string][]unstructured.Unstructured) (convert.Result, error)
}

type importResource struct {
	kind     string
	group    string
	resource string
	versions []string
}

var importSources = map[string]importSource{
	"metallb": {
		what: "MetalLB (metallb.io)",
		resources: []importResource{
			{convert.KindIPAddressPool, "metallb.io", "ipaddresspools", []string{"v1beta1"}},
			{convert.KindL2Advertisement, "metallb.io", "l2advertisements", []string{"v1beta1"}},
			{convert.KindBGPAdvertisement, "metallb.io", "bgpadvertisements", []string{"v1beta1"}},
			{convert.KindMetalLBBGPPeer, "metallb.io", "bgppeers", []string{"v1beta2"}},
			{convert.KindCommunity, "metallb.io", "communities", []string{"v1beta1"}},
			{convert.KindBFDProfile, "metallb.io", "bfdprofiles", []string{"v1beta1"}},
		},
		convert: func(objs map[string][]unstructured.Unstructured) (convert.Result, error) {
			m, err := convert.FromMetalLBObjects(objs)
			return convert.ConvertMetalLB(m), err
		},
	},
	"cilium": {
		what: "Cilium LB-IPAM and BGP control plane (cilium.io)",
		resources: []importResource{
			{convert.KindCiliumPool, "cilium.io", "ciliumloadbalancerippools", []string{"v2", "v2alpha1"}},
			{convert.KindCiliumL2Policy, "cilium.io", "ciliuml2announcementpolicies", []string{"v2alpha1"}},
			{convert.KindCiliumBGPClusterConfig, "cilium.io", "ciliumbgpclusterconfigs", []string{"v2", "v2alpha1"}},
			{convert.KindCiliumBGPPeerConfig, "cilium.io", "ciliumbgppeerconfigs", []string{"v2", "v2alpha1"}},
			{convert.KindCiliumBGPAdvertisement, "cilium.io", "ciliumbgpadvertisements", []string{"v2", "v2alpha1"}},
			{convert.KindCiliumBGPPeeringPolicy, "cilium.io", "ciliumbgppeeringpolicies", []string{"v2alpha1"}},
		},
		convert: func(objs map[string][]unstructured.Unstructured) (convert.Result, error) {
			c, err := convert.FromCiliumObjects(objs)
			return convert.ConvertCilium(c), err
		},
	},
}

const importUsage = `pvelbctl import metallb|cilium [flags]: print (or --apply) the IPPools and BGPPeers
equivalent to the cluster's MetalLB or Cilium configuration; a "# " line names every setting
pvelb has no equivalent for and what happens to it, and every Service that would not keep its
address.`

// importFieldManager owns the fields pvelbctl import --apply writes.
const importFieldManager = "pvelbctl-import"

func runImport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("pvelbctl import", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	output := fs.StringP("output", "o", "yaml", "output format: yaml")
	apply := fs.Bool("apply", false, "create or update the IPPools and BGPPeers in the cluster (server-side apply) instead of printing them")
	fs.Usage = func() { fmt.Fprintf(stdout, "%s\n\n%s", importUsage, fs.FlagUsages()) }
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := parseFlags(fs, args, stdout); err != nil {
			return err
		}
		return usageError{errors.New("which load balancer to import from: metallb or cilium")}
	}
	src, ok := importSources[args[0]]
	if !ok {
		return usageError{fmt.Errorf("unknown source %q: metallb or cilium", args[0])}
	}
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if *output != "yaml" {
		return usageError{fmt.Errorf("--output %q: only yaml", *output)}
	}
	kube, dyn, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	objs, err := readSource(ctx, dyn, src)
	if err != nil {
		return err
	}
	r, err := src.convert(objs)
	if err != nil {
		return err
	}
	svcs, err := kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing Services: %w", err)
	}
	r.Notes = append(r.Notes, convert.ServiceNotes(svcs.Items)...)
	if !*apply {
		y, err := r.YAML()
		if err != nil {
			return err
		}
		_, err = stdout.Write(y)
		return err
	}
	for _, n := range r.Notes {
		fmt.Fprintf(stdout, "# %s\n", n)
	}
	return applyObjects(ctx, dyn, r, stdout)
}

// readSource lists every resource of src, in the first version the cluster
// serves; a resource not served at all is left out, and none at all is an
// error (the load balancer's CRDs are not installed).
func readSource(ctx context.Context, dyn dynamic.Interface, src importSource) (map[string][]unstructured.Unstructured, error) {
	out := map[string][]unstructured.Unstructured{}
	served := 0
	for _, res := range src.resources {
		for _, v := range res.versions {
			list, err := dyn.Resource(schema.GroupVersionResource{Group: res.group, Version: v, Resource: res.resource}).List(ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("listing %s: %w", res.kind, err)
			}
			served++
			out[res.kind] = list.Items
			break
		}
	}
	if served == 0 {
		return nil, fmt.Errorf("the cluster serves none of the resources of %s: are its CRDs installed?", src.what)
	}
	return out, nil
}

// applyObjects creates or updates the converted objects with server-side
// apply, so a second import updates what the first wrote.
func applyObjects(ctx context.Context, dyn dynamic.Interface, r convert.Result, stdout io.Writer) error {
	objs, err := r.Objects()
	if err != nil {
		return err
	}
	for _, o := range objs {
		gvr := names.IPPools
		if o.GetKind() == "BGPPeer" {
			gvr = names.BGPPeers
		}
		if _, err := dyn.Resource(gvr).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: importFieldManager, Force: true}); err != nil {
			return fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
		}
		fmt.Fprintf(stdout, "%s.%s/%s applied\n", gvr.Resource, gvr.Group, o.GetName())
	}
	return nil
}
