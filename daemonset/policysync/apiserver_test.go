package policysync

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"sigs.k8s.io/yaml"
)

const crdFile = "../../charts/criguard/crds/imagepolicies.criguard.dev.yaml"

// fakeAPIServer is a dynamic client whose objects live in a field-managed
// tracker typed by the chart's ImagePolicy CRD: server-side apply merges
// status.nodes by name and records each field manager's fields with the
// API server's own merge code (structured-merge-diff). Unlike the API
// server it applies a status patch to the whole object, so tests assert
// that a status patch holds no spec.
func fakeAPIServer(t *testing.T, objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	t.Helper()
	scheme := runtime.NewScheme()
	for gvr, list := range listKinds {
		scheme.AddKnownTypeWithName(gvr.GroupVersion().WithKind(strings.TrimSuffix(list, "List")), &unstructured.Unstructured{})
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, listKinds)
	tc, err := managedfields.NewTypeConverter(imagePolicySchema(t), false)
	if err != nil {
		t.Fatalf("type converter from %s: %v", crdFile, err)
	}
	tracker := k8stesting.NewFieldManagedObjectTracker(scheme, serializer.NewCodecFactory(scheme).UniversalDecoder(), tc)
	for _, o := range objs {
		if err := tracker.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	dyn.PrependReactor("*", "*", k8stesting.ObjectReaction(tracker))
	dyn.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := tracker.Watch(a.GetResource(), a.GetNamespace())
		return true, w, err
	})
	return dyn
}

// imagePolicySchema is the CRD's OpenAPI schema as the type converter
// wants it: named, tagged with its group, version and kind. metadata is
// left open as the API server's ObjectMeta is to this test.
func imagePolicySchema(t *testing.T) map[string]*spec.Schema {
	t.Helper()
	data, err := os.ReadFile(crdFile)
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatalf("%s: %v", crdFile, err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%s: want one version", crdFile)
	}
	var s spec.Schema
	if err := json.Unmarshal(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &s); err != nil {
		t.Fatalf("%s: %v", crdFile, err)
	}
	meta := spec.Schema{}
	meta.Type = spec.StringOrArray{"object"}
	meta.AddExtension("x-kubernetes-preserve-unknown-fields", true)
	s.Properties["metadata"] = meta
	s.AddExtension("x-kubernetes-group-version-kind", []any{map[string]any{
		"group": ImagePolicies.Group, "version": ImagePolicies.Version, "kind": "ImagePolicy",
	}})
	return map[string]*spec.Schema{"dev.criguard.v1alpha1.ImagePolicy": &s}
}
