package policy

import (
	"strings"
	"testing"
)

func TestKyvernoMatchVariants(t *testing.T) {
	// The rule's namespaces are under test, not its images or key.
	e := newEnv(t)
	doc := func(match, exclude string) string { return e.expand(enforceDoc(match, exclude)) }
	cases := []struct {
		name    string
		match   string
		exclude string
		skipped bool
		in, out []string // namespaces the rule applies to / does not
	}{
		{"any kinds Pod", `{any: [{resources: {kinds: [Pod]}}]}`, "", false, []string{"a", ""}, nil},
		{"legacy resources", `{resources: {kinds: [Pod], namespaces: [prod]}}`, "", false, []string{"prod"}, []string{"dev"}},
		{"all filters", `{all: [{resources: {kinds: [Pod]}}, {resources: {namespaces: ["p*"]}}]}`, "", false, []string{"prod"}, []string{"dev"}},
		{"any namespaces", `{any: [{resources: {kinds: [Pod], namespaces: [a]}}, {resources: {kinds: [Pod], namespaces: [b]}}]}`, "", false, []string{"a", "b"}, []string{"c"}},
		{"controller kind applies to every pod", `{any: [{resources: {kinds: [apps/v1/Deployment]}}]}`, "", false, []string{"a"}, nil},
		{"no pod kinds: skipped", `{any: [{resources: {kinds: [ConfigMap]}}]}`, "", true, nil, nil},
		// Kyverno verifies images on UPDATE too (match.go: the rule applies when
		// "slices.Contains(conditionBlock.Operations, operation)"), and an
		// updated image reaches the node as a new pull and create.
		{"update only applies", `{any: [{resources: {kinds: [Pod], operations: [UPDATE]}}]}`, "", false, []string{"a"}, nil},
		{"delete only: skipped", `{any: [{resources: {kinds: [Pod], operations: [DELETE]}}]}`, "", true, nil, nil},
		{"create and update", `{any: [{resources: {kinds: [Pod], operations: [CREATE, UPDATE]}}]}`, "", false, []string{"a"}, nil},
		{"all with a non-pod filter: skipped", `{all: [{resources: {kinds: [Pod]}}, {resources: {kinds: [Service]}}]}`, "", true, nil, nil},
		{"exclude any", `{any: [{resources: {kinds: [Pod]}}]}`, `{any: [{resources: {namespaces: [kube-system]}}, {resources: {namespaces: ["dev-*"]}}]}`, false, []string{"prod", ""}, []string{"kube-system", "dev-1"}},
		{"exclude all", `{any: [{resources: {kinds: [Pod]}}]}`, `{all: [{resources: {namespaces: ["dev-*"]}}, {resources: {namespaces: ["*-1"]}}]}`, false, []string{"dev-2"}, []string{"dev-1"}},
		{"exclude for other kinds does not exclude pods", `{any: [{resources: {kinds: [Pod]}}]}`, `{any: [{resources: {kinds: [Deployment], namespaces: [x]}}, {resources: {kinds: [Service]}}]}`, false, []string{"x", "y"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := mustLoad(t, doc(tc.match, tc.exclude))
			rules := set.Policies[0].Rules
			if tc.skipped {
				if len(rules) != 0 || len(set.Warnings) == 0 || !strings.Contains(set.Warnings[0].Message, "selects no pods") {
					t.Fatalf("rules %d warnings %v", len(rules), set.Warnings)
				}
				return
			}
			if len(rules) != 1 {
				t.Fatalf("rules %d", len(rules))
			}
			for _, ns := range tc.in {
				if !rules[0].appliesToNamespace(ns) {
					t.Errorf("does not apply to %q", ns)
				}
			}
			for _, ns := range tc.out {
				if rules[0].appliesToNamespace(ns) {
					t.Errorf("applies to %q", ns)
				}
			}
		})
	}
	// any and all together, and no match at all, are refused.
	for _, m := range []string{`{any: [{resources: {kinds: [Pod]}}], all: [{resources: {kinds: [Pod]}}]}`, `{}`} {
		if _, err := loadString(t, doc(m, "")); err == nil {
			t.Errorf("%s loaded", m)
		}
	}
}

func TestKyvernoAdmissionFalseSkipped(t *testing.T) {
	d := kyvernoJSON(testKey(t)).set(t, "spec.admission", false)
	set, err := loadString(t, d.String()+"\n---\n"+nativeDocJSON(testKey(t)).String())
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Policies) != 1 || set.Policies[0].Source != SourceImagePolicy || !strings.Contains(set.Warnings[0].Message, "admission: false") {
		t.Fatalf("%+v %v", set.Policies, set.Warnings)
	}
}
