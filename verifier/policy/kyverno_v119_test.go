package policy

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// Issue 11 §5: Kyverno v1.19 semantics criguard used to read differently. Each
// test quotes the Kyverno v1.19.0 source it follows. (The override without
// namespaces is in TestKyvernoSemantics, UPDATE-only matches in
// TestKyvernoMatchVariants.)

// TestKyvernoExcludeSubresourceOnly: pkg/utils/match/kind.go CheckKind
// matches a kinds entry with a subresource only "if wildcard.Match(sub,
// subresource)": excluding Pod/ephemeralcontainers excludes that subresource,
// not the namespace's ordinary pods. criguard used to switch verification off
// for every pod of the namespace.
func TestKyvernoExcludeSubresourceOnly(t *testing.T) {
	const pods = `{any: [{resources: {kinds: [Pod]}}]}`
	tests := []struct {
		name, exclude string
		denied        bool
	}{
		{"Pod/ephemeralcontainers", `{any: [{resources: {kinds: [Pod/ephemeralcontainers], namespaces: [dev]}}]}`, true},
		{"v1/Pod/ephemeralcontainers", `{any: [{resources: {kinds: [v1/Pod/ephemeralcontainers], namespaces: [dev]}}]}`, true},
		{"Pod (the kind itself) still excludes", `{any: [{resources: {kinds: [Pod], namespaces: [dev]}}]}`, false},
		// Containers reach the node from creates and updates alike: an
		// exclusion for CREATE alone would let an updated image through.
		{"exclude CREATE only does not exclude", `{any: [{resources: {kinds: [Pod], namespaces: [dev], operations: [CREATE]}}]}`, true},
		{"exclude CREATE and UPDATE excludes", `{any: [{resources: {kinds: [Pod], namespaces: [dev], operations: [CREATE, UPDATE]}}]}`, false},
		{"exclude of Deployments with operations still excludes no pod", `{any: [{resources: {kinds: [Deployment], namespaces: [dev], operations: [CREATE, UPDATE]}}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			d := e.engine(enforceDoc(pods, tt.exclude)).Evaluate(context.Background(), Input{Image: "ghcr.io/x/y@" + digestOf('1'), Namespace: "dev"})
			if d.Allowed == tt.denied {
				t.Fatalf("allowed=%v, want denied=%v: %s", d.Allowed, tt.denied, d.Reason)
			}
		})
	}
}

// TestKyvernoUpdateOnlyRuleApplies: pkg/engine/utils/match.go skips a rule
// only "if !slices.Contains(conditionBlock.Operations, operation)": a rule for
// UPDATE verifies images on updates, and those reach the node as new pulls and
// creates. criguard used to drop the rule.
func TestKyvernoUpdateOnlyRuleApplies(t *testing.T) {
	e := newEnv(t)
	d := e.engine(enforceDoc(`{any: [{resources: {kinds: [Pod], operations: [UPDATE]}}]}`, "")).
		Evaluate(context.Background(), Input{Image: "ghcr.io/x/y@" + digestOf('1'), Namespace: "dev"})
	if d.Allowed || d.Rule != "r" {
		t.Fatalf("unsigned image under an UPDATE rule: %+v", d)
	}
}

// TestKyvernoRefusesWhatKyvernoRefuses: policies Kyverno's admission
// validation rejects are refused, with Kyverno's reason.
func TestKyvernoRefusesWhatKyvernoRefuses(t *testing.T) {
	tests := []struct {
		name, doc, path, quote string
	}{
		// pkg/validation/policy/validate.go validateWildcard: "wildcard policy
		// does not support rule type" for verifyImages rules.
		{"kinds *", enforceDoc(`{any: [{resources: {kinds: ["*"]}}]}`, ""), "spec.rules[0].match.any[0].resources.kinds", "wildcard policy does not support rule type"},
		// api/kyverno/v1/image_verification_types.go Validate: "mutateDigest
		// must be set to false for 'Audit' failure action"; mutateDigest
		// defaults to true and validationFailureAction to Audit.
		{"default Audit with default mutateDigest", strings.Replace(enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""), "  validationFailureAction: Enforce\n", "", 1),
			"spec.rules[0].verifyImages[0].mutateDigest", "mutateDigest must be set to false"},
		{"entry failureAction Audit with mutateDigest true", strings.Replace(enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""), `    - imageReferences: ["ghcr.io/*"]`, "    - imageReferences: [\"ghcr.io/*\"]\n      failureAction: Audit\n      mutateDigest: true", 1),
			"spec.rules[0].verifyImages[0].mutateDigest", "mutateDigest must be set to false"},
		// validateAttestorSet: "Count cannot exceed length of entries", even
		// when one entry holds several PEM keys.
		{"count above entries", strings.Replace(enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""), "      - entries:\n", "      - count: 2\n        entries:\n", 1),
			"spec.rules[0].verifyImages[0].attestors[0].count", "Count cannot exceed length of entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			// Two PEM keys in the one entry: two keys, still one entry.
			doc := strings.Replace(tt.doc, "publicKeys: KEYA", "publicKeys: "+strconv.Quote(e.keyA+e.keyB), 1)
			_, err := loadString(t, doc)
			if err == nil || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.quote) {
				t.Fatalf("load = %v; want a refusal at %s quoting %q", err, tt.path, tt.quote)
			}
		})
	}
	// Explicit mutateDigest: false under Audit is what Kyverno accepts.
	e := newEnv(t)
	ok := strings.Replace(strings.Replace(enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""), "  validationFailureAction: Enforce\n", "", 1),
		`    - imageReferences: ["ghcr.io/*"]`, "    - imageReferences: [\"ghcr.io/*\"]\n      mutateDigest: false", 1)
	if _, err := loadString(t, e.expand(ok)); err != nil {
		t.Fatalf("Audit with mutateDigest: false: %v", err)
	}
}

// TestKyvernoAdmissionFalseReason: a set whose only policies have admission:
// false is refused saying so, not "no ... Policy found".
func TestKyvernoAdmissionFalseReason(t *testing.T) {
	e := newEnv(t)
	doc := strings.Replace(enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, ""), "spec:\n", "spec:\n  admission: false\n", 1)
	_, err := loadString(t, e.expand(doc))
	if err == nil || !strings.Contains(err.Error(), "admission: false") || strings.Contains(err.Error(), "no ImagePolicy, ClusterPolicy or Policy found") {
		t.Fatalf("load = %v", err)
	}
}

// TestKyvernoNoAttestorsFailsImages: pkg/engine/internal/imageverifier.go
// verifies nothing when "len(imageVerify.Attestors) <= 0 &&
// len(imageVerify.Attestations) <= 0", and validate_image.go then fails the
// required image: "unverified image %s". criguard refused such policies with
// a wrong reason; it now loads them and fails the images they match.
func TestKyvernoNoAttestorsFailsImages(t *testing.T) {
	e := newEnv(t)
	doc := enforceDoc(`{any: [{resources: {kinds: [Pod]}}]}`, "")
	doc = doc[:strings.Index(doc, "      attestors:")]
	set := mustLoad(t, e.expand(doc))
	if len(set.Warnings) == 0 || !strings.Contains(set.Warnings[0].String(), "no attestors") {
		t.Errorf("warnings: %v", set.Warnings)
	}
	eng := NewEngine(NewStaticStore(set), e.v, EngineOptions{})
	d := eng.Evaluate(context.Background(), Input{Image: "ghcr.io/x/y@" + digestOf('1'), Namespace: "dev"})
	if d.Allowed || !strings.Contains(d.Reason, "no attestors") {
		t.Fatalf("%+v", d)
	}
	if e.v.verifies.Load() != 0 || e.v.resolves.Load() != 0 {
		t.Fatal("a rule with nothing to verify called the registry")
	}
}

// TestEveryReasonPerDocument: a refused document lists every reason, each at
// its path (docs/policy.md promises it; criguard used to stop at the first).
func TestEveryReasonPerDocument(t *testing.T) {
	e := newEnv(t)
	kyv := `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: k}
spec:
  validationFailureAction: Sometimes
  applyRules: One
  failurePolicy: Maybe
  rules:
  - name: r
    match: {any: [{resources: {kinds: ["*"]}}]}
    context: [{name: x, configMap: {name: y, namespace: z}}]
    verifyImages:
    - imageReferences: ["127.1/*"]
      mutateDigest: false
      attestors:
      - count: 3
        entries:
        - keys: {publicKeys: KEYA, kms: "awskms:///alias/x"}
  - name: r2
    match: {any: [{resources: {kinds: [Pod], bogus: 1}}]}
    verifyImages: [{imageReferences: ["*"], type: Notary}]
`
	nat := `---
apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: nat}
spec:
  mode: Sometimes
  rules:
  - name: a
    images: []
    action: Maybe
  - name: b
    images: ["0177.0.0.1/*"]
    attestors: {count: 2, entries: [{key: {data: KEYA}}]}
`
	_, err := loadString(t, e.expand(kyv+nat))
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		"document 1: spec.rules[1].match.any[0].resources.bogus: unknown field",
		"document 2: spec.mode: unknown value",
		"document 2: spec.rules[0].images: required",
		"document 2: spec.rules[0].action: unknown value",
		"document 2: spec.rules[1].images[0]: pattern",
		"document 2: spec.rules[1].attestors.count: 2 is out of range",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q:\n%v", want, err)
		}
	}
	// Once the document decodes, every compile reason is listed too.
	kyv = strings.Replace(kyv, ", bogus: 1", "", 1)
	_, err = loadString(t, e.expand(kyv))
	for _, want := range []string{
		"spec.validationFailureAction: unknown value",
		"spec.applyRules: One",
		"spec.failurePolicy: unknown value",
		"spec.rules[0].context:",
		"spec.rules[0].match.any[0].resources.kinds:",
		"spec.rules[0].verifyImages[0].imageReferences[0]: pattern",
		"spec.rules[0].verifyImages[0].attestors[0].count: 3 is out of range",
		"spec.rules[0].verifyImages[0].attestors[0].entries[0].keys.kms",
		"spec.rules[1].verifyImages[0].type: Notary",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q:\n%v", want, err)
		}
	}
}
