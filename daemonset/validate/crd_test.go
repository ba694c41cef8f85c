package validate

import (
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
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

const (
	crdFile      = "../../charts/criguard/crds/imagepolicies.criguard.dev.yaml"
	fixtureDir   = "../../testdata/imagepolicy"
	starterFile  = "../policy/policy.yaml"
	chartStarter = "../../charts/criguard/files/starter-policy.yaml"
)

// crdSchema is what the API server does with an ImagePolicy: the OpenAPI
// schema, the CEL rules, list-map keys and unknown-field detection (kubectl's
// default --validate=strict makes the server refuse unknown fields).
type crdSchema struct {
	structural *structuralschema.Structural
	openAPI    apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// loadCRD decodes the CRD strictly, validates it as the API server does on
// create (structural schema, CEL compilation and cost), and builds validators.
func loadCRD(t *testing.T) (*apiextensionsv1.CustomResourceDefinition, *crdSchema) {
	t.Helper()
	data, err := os.ReadFile(crdFile)
	if err != nil {
		t.Fatal(err)
	}
	sch := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	if err := apiextensions.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(sch, serializer.EnableStrict).UniversalDeserializer().Decode(js, nil, nil)
	if err != nil {
		t.Fatalf("CRD does not decode strictly: %v", err)
	}
	crd := obj.(*apiextensionsv1.CustomResourceDefinition)
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
	var internal apiextensions.CustomResourceDefinition
	if err := sch.Convert(crd, &internal, nil); err != nil {
		t.Fatal(err)
	}
	if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), &internal); len(errs) > 0 {
		t.Fatalf("the API server would refuse the CRD: %v", errs.ToAggregate())
	}
	// The internal form holds a schema shared by every version at the top.
	if len(internal.Spec.Versions) != 1 || internal.Spec.Validation == nil {
		t.Fatalf("want one version and its schema, got %+v", internal.Spec.Versions)
	}
	props := internal.Spec.Validation.OpenAPIV3Schema
	s, err := structuralschema.NewStructural(props)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := apiservervalidation.NewSchemaValidator(props)
	if err != nil {
		t.Fatal(err)
	}
	return crd, &crdSchema{structural: s, openAPI: v, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}
}

// validate returns every reason the API server would refuse obj.
func (c *crdSchema) validate(obj map[string]any) field.ErrorList {
	var errs field.ErrorList
	for _, p := range pruning.PruneWithOptions(runtime.DeepCopyJSON(obj), c.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		errs = append(errs, field.Invalid(field.NewPath(p), nil, "unknown field"))
	}
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, c.openAPI)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, c.structural, obj)...)
	celErrs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func readObject(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	// As the API server decodes: whole numbers are int64, not float64.
	var obj map[string]any
	if err := utiljson.Unmarshal(js, &obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return obj
}

func TestImagePolicyCRD(t *testing.T) {
	crd, _ := loadCRD(t)
	if crd.Name != "imagepolicies.criguard.dev" || crd.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Errorf("CRD %s scope %s, want imagepolicies.criguard.dev, Cluster", crd.Name, crd.Spec.Scope)
	}
	v := crd.Spec.Versions[0]
	if v.Name != "v1alpha1" || !v.Served || !v.Storage || v.Subresources == nil || v.Subresources.Status == nil {
		t.Errorf("version %s served=%v storage=%v subresources=%+v", v.Name, v.Served, v.Storage, v.Subresources)
	}
	cols := map[string]string{}
	for _, c := range v.AdditionalPrinterColumns {
		cols[c.Name] = c.JSONPath
	}
	for name, path := range map[string]string{"Mode": ".spec.mode", "Unmatched": ".spec.unmatchedImages", "FailurePolicy": ".spec.failurePolicy"} {
		if cols[name] != path {
			t.Errorf("printer column %s = %q, want %q", name, cols[name], path)
		}
	}
}

// Every fixture means to the schema what it means to the loader
// (verifier/policy/crd_fixtures_test.go checks the loader's side).
func TestImagePolicySchema(t *testing.T) {
	_, schema := loadCRD(t)
	for _, tc := range []struct {
		glob   string
		accept bool
	}{
		{filepath.Join(fixtureDir, "valid", "*.yaml"), true},
		{starterFile, true},
		{filepath.Join(fixtureDir, "loader-only", "*.yaml"), true},
		{filepath.Join(fixtureDir, "invalid", "*.yaml"), false},
	} {
		files, err := filepath.Glob(tc.glob)
		if err != nil || len(files) == 0 {
			t.Fatalf("no fixtures match %s (%v)", tc.glob, err)
		}
		for _, f := range files {
			t.Run(strings.TrimPrefix(f, "../"), func(t *testing.T) {
				errs := schema.validate(readObject(t, f))
				switch {
				case tc.accept && len(errs) > 0:
					t.Errorf("refused: %v", errs.ToAggregate())
				case !tc.accept && len(errs) == 0:
					t.Error("accepted; the API server would store a policy every node refuses")
				case len(errs) > 0:
					t.Logf("refused: %v", errs.ToAggregate())
				}
			})
		}
	}
}

func TestChartStarterPolicy(t *testing.T) {
	a, err := os.ReadFile(starterFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(chartStarter)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%s differs from %s: copy it (helm charts cannot read outside their folder)", chartStarter, starterFile)
	}
}

// status.nodes is what criguard-sync applies, one entry per node
// (daemonset/policysync/status.go): a list map keyed by node name.
func TestImagePolicyStatusSchema(t *testing.T) {
	_, schema := loadCRD(t)
	entry := func(name string, mod func(map[string]any)) map[string]any {
		e := map[string]any{"name": name, "observedGeneration": int64(2), "result": "Synced",
			"message": "node " + name + " wrote generation 2 to imagepolicy-team.yaml for criguard to enforce", "time": "2026-12-01T13:00:00Z"}
		if mod != nil {
			mod(e)
		}
		return e
	}
	for _, tc := range []struct {
		name   string
		status map[string]any
		accept bool
	}{
		{"two nodes", map[string]any{"nodes": []any{entry("node-a", nil), entry("node-b", func(e map[string]any) { e["result"] = "Rejected" })}}, true},
		{"no nodes yet", map[string]any{}, true},
		{"one node twice", map[string]any{"nodes": []any{entry("node-a", nil), entry("node-a", nil)}}, false},
		{"unknown result", map[string]any{"nodes": []any{entry("node-a", func(e map[string]any) { e["result"] = "Loaded" })}}, false},
		{"no result", map[string]any{"nodes": []any{entry("node-a", func(e map[string]any) { delete(e, "result") })}}, false},
		{"no name", map[string]any{"nodes": []any{entry("", func(e map[string]any) { delete(e, "name") })}}, false},
		{"message too long", map[string]any{"nodes": []any{entry("node-a", func(e map[string]any) { e["message"] = strings.Repeat("x", 513) })}}, false},
		{"time not a date-time", map[string]any{"nodes": []any{entry("node-a", func(e map[string]any) { e["time"] = "yesterday" })}}, false},
		{"top-level observedGeneration (dropped: no single observer)", map[string]any{"observedGeneration": int64(2)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := readObject(t, chartStarter)
			obj["status"] = tc.status
			errs := schema.validate(obj)
			if tc.accept != (len(errs) == 0) {
				t.Errorf("accept=%v, errors: %v", tc.accept, errs.ToAggregate())
			} else if len(errs) > 0 {
				t.Logf("refused: %v", errs.ToAggregate())
			}
		})
	}
}
