// Package crdcheck runs the generated CRDs and the example documents in
// loadbalancer/api/v1alpha1/testdata through the apiextensions-apiserver's
// own validation code: the CRD validation the apiserver runs when the CRD is
// created (CEL compilation and cost limits included), then per document
// defaulting, OpenAPI schema validation, list-type checks and CEL rules.
//
// It is a fast pre-check; the real-apiserver harness applies the same
// documents to a running kube-apiserver. It lives in the generator tools
// module because apiextensions-apiserver is not a dependency of pvelb itself.
package crdcheck

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

const (
	crdDir  = "../../../manifests/crds"
	dataDir = "../../../loadbalancer/api/v1alpha1/testdata"
)

type kindValidator struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

func loadCRDs(t *testing.T) map[string]*kindValidator {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s (run hack/generate.sh): %v", crdDir, err)
	}
	out := map[string]*kindValidator{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v1 apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &v1); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// Defaulting of the CRD itself, as the apiserver does on create.
		apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1)
		var internal apiextensions.CustomResourceDefinition
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &internal, nil); err != nil {
			t.Fatalf("%s: convert: %v", f, err)
		}
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), &internal); len(errs) > 0 {
			t.Fatalf("%s: the apiserver would refuse this CRD:\n%v", f, errs.ToAggregate())
		}
		for _, ver := range internal.Spec.Versions {
			// The internal form hoists a schema shared by all versions to spec.validation.
			validation := internal.Spec.Validation
			if ver.Schema != nil {
				validation = ver.Schema
			}
			s, err := structuralschema.NewStructural(validation.OpenAPIV3Schema)
			if err != nil {
				t.Fatalf("%s: structural: %v", f, err)
			}
			sv, _, err := apiservervalidation.NewSchemaValidator(validation.OpenAPIV3Schema)
			if err != nil {
				t.Fatalf("%s: schema validator: %v", f, err)
			}
			out[internal.Spec.Names.Kind] = &kindValidator{
				structural: s,
				schema:     sv,
				cel:        cel.NewValidator(s, true, celconfig.PerCallLimit),
			}
		}
	}
	return out
}

// validate mirrors the create path of the apiserver for a custom resource:
// prune and coerce metadata, default, then schema, list-type and CEL checks.
func (k *kindValidator) validate(obj map[string]interface{}) field.ErrorList {
	pruning.PruneWithOptions(obj, k.structural, true, structuralschema.UnknownFieldPathOptions{})
	if err := schemaobjectmeta.Coerce(nil, obj, k.structural, true, false); err != nil {
		return field.ErrorList{err}
	}
	structuraldefaulting.Default(obj, k.structural)
	errs := apiservervalidation.ValidateCustomResource(nil, obj, k.schema)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, k.structural, obj)...)
	celErrs, _ := k.cel.Validate(context.Background(), nil, k.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func readDoc(t *testing.T, path string) (map[string]interface{}, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var expect string
	for _, line := range bytes.Split(data, []byte("\n")) {
		if s, ok := strings.CutPrefix(string(line), "# expect: "); ok {
			expect = s
		}
	}
	// Decode as the apiserver does: JSON integers become int64, not float64.
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(j, &obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj, expect
}

func TestValidDocumentsAreAccepted(t *testing.T) {
	kinds := loadCRDs(t)
	files, _ := filepath.Glob(filepath.Join(dataDir, "valid", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no valid documents")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj, _ := readDoc(t, f)
			kind, _ := obj["kind"].(string)
			k := kinds[kind]
			if k == nil {
				t.Fatalf("unknown kind %q", kind)
			}
			if errs := k.validate(obj); len(errs) > 0 {
				t.Fatalf("refused: %v", errs.ToAggregate())
			}
		})
	}
}

func TestInvalidDocumentsAreRefused(t *testing.T) {
	kinds := loadCRDs(t)
	files, _ := filepath.Glob(filepath.Join(dataDir, "invalid", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no invalid documents")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			obj, expect := readDoc(t, f)
			if expect == "" {
				t.Fatal("missing '# expect: <error substring>' line")
			}
			kind, _ := obj["kind"].(string)
			k := kinds[kind]
			if k == nil {
				t.Fatalf("unknown kind %q", kind)
			}
			errs := k.validate(obj)
			if len(errs) == 0 {
				t.Fatalf("accepted, want an error containing %q", expect)
			}
			if msg := errs.ToAggregate().Error(); !strings.Contains(msg, expect) {
				t.Fatalf("error %q does not contain %q", msg, expect)
			}
		})
	}
}

// TestDefaults checks the defaults users rely on are filled in at admission.
func TestDefaults(t *testing.T) {
	kinds := loadCRDs(t)
	obj, _ := readDoc(t, filepath.Join(dataDir, "valid", "ippool-minimal.yaml"))
	if errs := kinds["IPPool"].validate(obj); len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	spec := obj["spec"].(map[string]interface{})
	if spec["autoAssign"] != true {
		t.Errorf("autoAssign = %v, want true", spec["autoAssign"])
	}
	if mode := spec["announce"].(map[string]interface{})["mode"]; mode != "arp" {
		t.Errorf("announce.mode = %v, want arp", mode)
	}

	peer, _ := readDoc(t, filepath.Join(dataDir, "valid", "bgppeer-minimal.yaml"))
	if errs := kinds["BGPPeer"].validate(peer); len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	pspec := peer["spec"].(map[string]interface{})
	if pspec["peerPort"] != int64(179) || pspec["holdTime"] != "90s" {
		t.Errorf("peerPort=%v holdTime=%v, want 179 and 90s", pspec["peerPort"], pspec["holdTime"])
	}
}
