package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/criguard/criguard/verifier/cosign"
)

// env is a test world: keys A, B, C and a fake registry.
type env struct {
	t       *testing.T
	keyA    string
	keyB    string
	keyC    string
	fpA     string
	fpB     string
	fpC     string
	v       *fakeVerifier
	nowMu   sync.Mutex
	current time.Time
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, keyA: testKey(t), keyB: testKey(t), keyC: testKey(t), v: newFake(), current: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e.fpA, e.fpB, e.fpC = fingerprint(t, e.keyA), fingerprint(t, e.keyB), fingerprint(t, e.keyC)
	return e
}

func (e *env) now() time.Time {
	e.nowMu.Lock()
	defer e.nowMu.Unlock()
	return e.current
}

func (e *env) advance(d time.Duration) {
	e.nowMu.Lock()
	defer e.nowMu.Unlock()
	e.current = e.current.Add(d)
}

// fingerprints are those of the keys named by letter (A, B, C), for
// fakeVerifier.sign.
func (e *env) fingerprints(letters []string) []string {
	e.t.Helper()
	byLetter := map[string]string{"A": e.fpA, "B": e.fpB, "C": e.fpC}
	var fps []string
	for _, l := range letters {
		fp, ok := byLetter[l]
		if !ok {
			e.t.Fatalf("no key %q in the test world (A, B, C)", l)
		}
		fps = append(fps, fp)
	}
	return fps
}

// expand replaces KEYA/KEYB/KEYC with quoted PEM keys.
func (e *env) expand(doc string) string {
	return strings.NewReplacer("KEYA", strconv.Quote(e.keyA), "KEYB", strconv.Quote(e.keyB), "KEYC", strconv.Quote(e.keyC)).Replace(doc)
}

func (e *env) engine(doc string) *Engine {
	e.t.Helper()
	set := mustLoad(e.t, e.expand(doc))
	return NewEngine(NewStaticStore(set), e.v, EngineOptions{Clock: e.now})
}

func native(spec string, rules string) string {
	return "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\nspec:\n" + spec + "  rules:\n" + rules
}

const verifyA = `  - name: team
    images: ["registry.example.com/team/*"]
    attestors:
      entries:
      - key: {data: KEYA}
`

func TestEvaluate(t *testing.T) {
	const img = "registry.example.com/team/app:v1"
	const repo = "registry.example.com/team/app"
	dSigned, dUnsigned, dIncomplete := digestOf('1'), digestOf('2'), digestOf('3')
	type want struct {
		allowed, audited, failedOpen bool
		policy, rule                 string
		reason                       string
		digest                       string
		verifies                     int32
	}
	// prodOnly verifies (key C) in prod-* namespaces only.
	const prodOnly = `  - name: prod
    images: ["registry.example.com/*"]
    namespaces: ["prod-*"]
    attestors:
      entries:
      - key: {data: KEYC}
`
	cases := []struct {
		name string
		doc  string
		in   Input
		want want
	}{
		{"enforce signed tag resolves", native("", verifyA), Input{Image: img}, want{allowed: true, policy: "p", rule: "team", reason: "verified", digest: dSigned, verifies: 1}},
		{"enforce signed digest input", native("", verifyA), Input{Image: img, Digest: dSigned}, want{allowed: true, policy: "p", rule: "team", digest: dSigned, verifies: 1}},
		{"enforce unsigned", native("", verifyA), Input{Image: repo + "@" + dUnsigned}, want{policy: "p", rule: "team", reason: "no signatures found", digest: dUnsigned, verifies: 1}},
		{"audit unsigned", native("  mode: Audit\n", verifyA), Input{Image: repo + "@" + dUnsigned}, want{allowed: true, audited: true, policy: "p", rule: "team", reason: "audit: would deny", digest: dUnsigned, verifies: 1}},
		{"enforce incomplete fail", native("", verifyA), Input{Image: img, Digest: dIncomplete}, want{policy: "p", rule: "team", reason: "could not complete", digest: dIncomplete, verifies: 1}},
		{"enforce incomplete ignore", native("  failurePolicy: Ignore\n", verifyA), Input{Image: img, Digest: dIncomplete}, want{allowed: true, audited: true, failedOpen: true, policy: "p", rule: "team", reason: "failed open", digest: dIncomplete, verifies: 1}},
		{"native server error ignore fails open", native("  failurePolicy: Ignore\n", verifyA), Input{Image: img, Digest: digestOf('8')}, want{allowed: true, audited: true, failedOpen: true, policy: "p", rule: "team", reason: "503", digest: digestOf('8'), verifies: 1}},
		{"audit incomplete fail", native("  mode: Audit\n", verifyA), Input{Image: img, Digest: dIncomplete}, want{allowed: true, audited: true, policy: "p", rule: "team", reason: "audit: would deny", digest: dIncomplete, verifies: 1}},
		{"ignore does not cover a real failure", native("  failurePolicy: Ignore\n", verifyA), Input{Image: img, Digest: dUnsigned}, want{policy: "p", rule: "team", reason: "no signatures found", digest: dUnsigned, verifies: 1}},
		{"deny rule", native("", "  - name: evil\n    images: [\"registry.example.com/*\"]\n    action: Deny\n"+verifyA), Input{Image: img, Digest: dSigned}, want{policy: "p", rule: "evil", reason: "action Deny", digest: dSigned, verifies: 0}},
		{"deny rule audit", native("  mode: Audit\n", "  - name: evil\n    images: [\"registry.example.com/*\"]\n    action: Deny\n"), Input{Image: img, Digest: dSigned}, want{allowed: true, audited: true, policy: "p", rule: "evil", reason: "audit: would deny", digest: dSigned}},
		{"allow rule", native("", "  - name: ok\n    images: [\"registry.example.com/*\"]\n    action: Allow\n"), Input{Image: img}, want{allowed: true, policy: "p", rule: "ok", reason: "action Allow", digest: dSigned}},
		{"allow rule does not override verify", native("", "  - name: ok\n    images: [\"registry.example.com/*\"]\n    action: Allow\n"+verifyA), Input{Image: img, Digest: dUnsigned}, want{policy: "p", rule: "team", reason: "no signatures", digest: dUnsigned, verifies: 1}},
		{"unmatched deny", native("", verifyA), Input{Image: "ghcr.io/other/app:v1"}, want{policy: "p", reason: "no rule matches"}},
		{"unmatched allow", native("  unmatchedImages: Allow\n", verifyA), Input{Image: "ghcr.io/other/app:v1"}, want{allowed: true, reason: "unmatched images are allowed", digest: dSigned}},
		{"unmatched deny audit", native("  mode: Audit\n", verifyA), Input{Image: "ghcr.io/other/app:v1"}, want{allowed: true, audited: true, policy: "p", reason: "audit: no rule matches", digest: dSigned}},
		{"local verify rule", native("", verifyA), Input{Image: img, Local: true}, want{policy: "p", rule: "team", reason: "no repository digest"}},
		{"local allow rule", native("", "  - name: ok\n    images: [\"registry.example.com/*\"]\n    action: Allow\n"), Input{Image: img, Local: true}, want{allowed: true, policy: "p", rule: "ok"}},
		{"local unmatched allow", native("  unmatchedImages: Allow\n", verifyA), Input{Image: "imported/thing:v1", Local: true}, want{allowed: true}},
		{"local unmatched deny", native("", verifyA), Input{Image: "imported/thing:v1", Local: true}, want{policy: "p", reason: "no rule matches"}},
		{"local with digest is invalid", native("", verifyA), Input{Image: img, Local: true, Digest: dSigned}, want{reason: "invalid input", digest: dSigned}},
		{"threshold 2 of 3 met", native("", `  - name: two
    images: ["registry.example.com/*"]
    attestors:
      count: 2
      entries:
      - key: {data: KEYA}
      - key: {data: KEYB}
      - key: {data: KEYC}
`), Input{Image: img, Digest: dSigned}, want{allowed: true, policy: "p", rule: "two", digest: dSigned, verifies: 1}},
		{"threshold all not met", native("", `  - name: all
    images: ["registry.example.com/*"]
    attestors:
      entries:
      - key: {data: KEYA}
      - key: {data: KEYC}
`), Input{Image: img, Digest: dSigned}, want{policy: "p", rule: "all", reason: "2 of keys", digest: dSigned, verifies: 1}},
		{"namespace excluded from rule", native("", prodOnly), Input{Image: img, Digest: dSigned, Namespace: "dev"}, want{policy: "p", reason: "in namespace dev", digest: dSigned}},
		{"namespace included in rule", native("", prodOnly), Input{Image: img, Digest: dSigned, Namespace: "prod-1"}, want{policy: "p", rule: "prod", reason: "0 of 1 required keys", digest: dSigned, verifies: 1}},
		{"excluded image unmatched", native("", `  - name: team
    images: ["registry.example.com/*"]
    excludeImages: ["registry.example.com/team/*"]
    action: Deny
`), Input{Image: img, Digest: dSigned}, want{policy: "p", reason: "no rule matches", digest: dSigned}},
		{"tag not found", native("", verifyA), Input{Image: "registry.example.com/team/missing:v1"}, want{policy: "p", rule: "team", reason: "MANIFEST_UNKNOWN"}},
		{"digest mismatch", native("", verifyA), Input{Image: repo + "@" + dSigned, Digest: dUnsigned}, want{reason: "pins", digest: dUnsigned}},
		{"bad digest", native("", verifyA), Input{Image: img, Digest: "sha256:xyz"}, want{reason: "not an image digest", digest: "sha256:xyz"}},
		{"bad image", native("", verifyA), Input{Image: "Not A Ref"}, want{reason: "not valid"}},
		{"image id", native("", verifyA), Input{Image: dSigned}, want{reason: "image ID"}},
		{"other repository same digest", native("", `  - name: all
    images: ["registry.example.com/*"]
    attestors:
      entries:
      - key: {data: KEYA}
`), Input{Image: "registry.example.com/team/copy@" + dSigned}, want{policy: "p", rule: "all", reason: "no signatures found", digest: dSigned, verifies: 1}},
		{"signature repository", native("", `  - name: sigs
    images: ["registry.example.com/*"]
    signatureRepository: registry.example.com/sigs
    attestors:
      entries:
      - key: {data: KEYB}
`), Input{Image: img, Digest: dSigned}, want{allowed: true, policy: "p", rule: "sigs", digest: dSigned, verifies: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.v.tags[img] = dSigned
			e.v.tags["ghcr.io/other/app:v1"] = dSigned
			e.v.sign(repo+"@"+dSigned, e.fpA, e.fpB)
			e.v.sign("registry.example.com/sigs@"+dSigned, e.fpB)
			e.v.incomplete[dIncomplete] = true
			e.v.serverError[digestOf('8')] = true
			eng := e.engine(tc.doc)
			d := eng.Evaluate(context.Background(), tc.in)
			w := tc.want
			if d.Allowed != w.allowed || d.Audited != w.audited || d.FailedOpen != w.failedOpen || d.Policy != w.policy || d.Rule != w.rule || !strings.Contains(d.Reason, w.reason) || d.Digest != w.digest {
				t.Fatalf("got allowed=%v audited=%v failedOpen=%v policy=%q rule=%q digest=%q reason=%q\nwant %+v", d.Allowed, d.Audited, d.FailedOpen, d.Policy, d.Rule, d.Digest, d.Reason, w)
			}
			if n := e.v.verifies.Load(); n != w.verifies {
				t.Fatalf("verify calls = %d, want %d", n, w.verifies)
			}
			if d.Allowed && !d.Audited && w.verifies > 0 && len(d.Verified) == 0 {
				t.Fatal("allowed by verification without signatures recorded")
			}
			if d.Generation != 1 || d.Explain() == "" {
				t.Fatalf("generation %d", d.Generation)
			}
		})
	}
}

func TestEvaluateSeveralPolicies(t *testing.T) {
	const img = "registry.example.com/team/app"
	d1 := digestOf('1')
	doc := func(nativeMode, kyvernoAction string) string {
		return native("  mode: "+nativeMode+"\n", verifyA) + `---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: k}
spec:
  validationFailureAction: ` + kyvernoAction + `
  rules:
  - name: kr
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["registry.example.com/*"]
      mutateDigest: false
      verifyDigest: false
      attestors:
      - entries:
        - keys: {publicKeys: KEYB, rekor: {ignoreTlog: true}}
`
	}
	cases := []struct {
		name                     string
		nativeMode, kyvAction    string
		signers                  []string // A, B
		allowed, audited         bool
		policy, rule, reasonPart string
	}{
		{"both pass", "Enforce", "Enforce", []string{"A", "B"}, true, false, "p", "team", "verified"},
		{"kyverno fails enforce", "Enforce", "Enforce", []string{"A"}, false, false, "k", "kr", "0 of 1 required keys"},
		{"native fails enforce", "Enforce", "Enforce", []string{"B"}, false, false, "p", "team", ""},
		{"kyverno fails audit", "Enforce", "Audit", []string{"A"}, true, true, "k", "kr", "audit: would deny"},
		{"native fails audit, kyverno enforce passes", "Audit", "enforce", []string{"B"}, true, true, "p", "team", "audit"},
		{"both fail, one enforce", "Audit", "Enforce", nil, false, false, "k", "kr", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			fps := e.fingerprints(tc.signers)
			e.v.sign(img+"@"+d1, fps...)
			if len(fps) == 0 {
				e.v.sign(img+"@"+d1, e.fpC)
			}
			eng := e.engine(doc(tc.nativeMode, tc.kyvAction))
			d := eng.Evaluate(context.Background(), Input{Image: img + "@" + d1})
			if d.Allowed != tc.allowed || d.Audited != tc.audited || d.Policy != tc.policy || d.Rule != tc.rule || !strings.Contains(d.Reason, tc.reasonPart) {
				t.Fatalf("got %+v", d)
			}
			if len(d.Rules) == 0 {
				t.Fatal("no rule outcomes")
			}
		})
	}
}

// The check-image ClusterPolicy from Kyverno's documentation and the
// equivalent ImagePolicy decide every case the same way.
func TestKyvernoDocsPolicyEqualsNative(t *testing.T) {
	const nativeEquivalent = `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: check-image}
spec:
  mode: Enforce
  unmatchedImages: Allow   # Kyverno admits images no rule matches
  failurePolicy: Fail
  verificationTimeout: 30s
  rules:
  - name: check-image
    images: ["ghcr.io/kyverno/test-verify-image*"]
    attestors:
      count: 1
      entries:
      - key: {data: DOCSKEY}
`
	const repo = "ghcr.io/kyverno/test-verify-image"
	signed, other, unsigned, flaky := digestOf('5'), digestOf('6'), digestOf('7'), digestOf('8')
	inputs := []Input{
		{Image: repo + ":signed"},
		{Image: repo + ":signed-by-someone-else"},
		{Image: repo + ":unsigned"},
		{Image: repo + ":missing"},
		{Image: repo + "@" + signed, Namespace: "default"},
		{Image: repo + ":signed", Digest: flaky},
		{Image: repo + ":signed", Local: true},
		{Image: "ghcr.io/kyverno/other:1"},
		{Image: "ghcr.io/kyverno/other:1", Local: true},
		{Image: "nginx", Namespace: "kube-system"},
	}
	run := func(doc string) []Decision {
		e := newEnv(t)
		otherKey := testKey(t)
		e.v.tags[repo+":signed"] = signed
		e.v.tags[repo+":signed-by-someone-else"] = other
		e.v.tags[repo+":unsigned"] = unsigned
		e.v.tags["ghcr.io/kyverno/other:1"] = unsigned
		e.v.tags["docker.io/library/nginx:latest"] = unsigned
		e.v.sign(repo+"@"+signed, fingerprint(t, docsKey))
		e.v.sign(repo+"@"+other, fingerprint(t, otherKey))
		e.v.incomplete[flaky] = true
		eng := e.engine(strings.ReplaceAll(doc, "DOCSKEY", strconv.Quote(docsKey)))
		var out []Decision
		for _, in := range inputs {
			out = append(out, eng.Evaluate(context.Background(), in))
		}
		return out
	}
	kyv, nat := run(docsPolicy), run(nativeEquivalent)
	wantAllowed := []bool{true, false, false, false, true, false, false, true, true, true}
	for i := range inputs {
		k, n := kyv[i], nat[i]
		if k.Allowed != wantAllowed[i] {
			t.Errorf("%+v: kyverno allowed=%v, want %v (%s)", inputs[i], k.Allowed, wantAllowed[i], k.Reason)
		}
		if k.Allowed != n.Allowed || k.Audited != n.Audited || k.FailedOpen != n.FailedOpen || k.Digest != n.Digest || k.Rule != n.Rule || k.Policy != n.Policy {
			t.Errorf("%+v:\nkyverno %+v\nnative  %+v", inputs[i], k, n)
		}
		// Same verifier reasons (key names differ: file vs policy path).
		if (k.Reason == "") != (n.Reason == "") {
			t.Errorf("%+v: reasons %q vs %q", inputs[i], k.Reason, n.Reason)
		}
	}
}

func TestKyvernoSemantics(t *testing.T) {
	const repo = "ghcr.io/team/app"
	d1 := digestOf('1')
	base := func(extra string, vi string) string {
		if !strings.Contains(vi, "mutateDigest") {
			// Kyverno refuses mutateDigest (default true) under Audit.
			vi = "      mutateDigest: false\n      verifyDigest: false\n" + vi
		}
		return `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: k}
spec:
` + extra + `  rules:
  - name: r
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["ghcr.io/*"]
` + vi + `      attestors:
      - entries:
        - keys: {publicKeys: KEYA, rekor: {ignoreTlog: true}}
`
	}
	cases := []struct {
		name    string
		doc     string
		in      Input
		allowed bool
		audited bool
		reason  string
	}{
		{"default action is Audit (as Kyverno)", base("", ""), Input{Image: repo + "@" + d1}, true, true, "audit"},
		{"rule failureAction Enforce wins", base("  validationFailureAction: Audit\n", "      failureAction: Enforce\n"), Input{Image: repo + "@" + d1}, false, false, "0 of 1 required keys"},
		{"override by namespace", base("  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n  - {action: Audit, namespaces: [\"dev-*\"]}\n", ""), Input{Image: repo + "@" + d1, Namespace: "dev-1"}, true, true, "audit"},
		{"override other namespace", base("  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n  - {action: Audit, namespaces: [\"dev-*\"]}\n", ""), Input{Image: repo + "@" + d1, Namespace: "prod"}, false, false, ""},
		// Kyverno 1.18+ (pkg/engine/api/engineresponse.go matchOverride): "Both
		// Namespaces and NamespaceSelector nil means the override applies to
		// all namespaces." criguard used to match none.
		{"override without namespaces applies to every namespace", base("  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n  - {action: Audit}\n", ""), Input{Image: repo + "@" + d1, Namespace: "prod"}, true, true, "audit"},
		{"override without namespaces, unknown namespace", base("  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n  - {action: Audit}\n", ""), Input{Image: repo + "@" + d1}, true, true, "audit"},
		// An empty list is not nil: "for _, ns := range v.Namespaces" matches nothing.
		{"override with an empty namespaces list matches none", base("  validationFailureAction: Enforce\n  validationFailureActionOverrides:\n  - {action: Audit, namespaces: []}\n", ""), Input{Image: repo + "@" + d1, Namespace: "prod"}, false, false, ""},
		// Unknown namespace: the strictest mode an override names applies.
		{"unknown namespace takes an Enforce override", base("  validationFailureAction: Audit\n  validationFailureActionOverrides:\n  - {action: Enforce, namespaces: [\"prod-*\"]}\n", ""), Input{Image: repo + "@" + d1}, false, false, ""},
		{"verifyDigest without mutateDigest needs a digest", base("  validationFailureAction: Enforce\n", "      mutateDigest: false\n"), Input{Image: repo + ":v1", Digest: d1}, false, false, "referenced by digest"},
		{"skipImageReferences", base("  validationFailureAction: Enforce\n", "      skipImageReferences: [\"ghcr.io/team/*\"]\n"), Input{Image: repo + "@" + d1}, true, false, "no rule matches"},
		{"incomplete under Audit with failurePolicy Fail denies (as Kyverno)", base("", ""), Input{Image: repo + "@" + digestOf('9')}, false, false, "could not complete"},
		{"incomplete with failurePolicy Ignore fails open", base("  failurePolicy: Ignore\n  validationFailureAction: Enforce\n", ""), Input{Image: repo + "@" + digestOf('9')}, true, true, "failed open"},
		{"server error under Enforce and Ignore fails the rule (as Kyverno)", base("  failurePolicy: Ignore\n  validationFailureAction: Enforce\n", ""), Input{Image: repo + "@" + digestOf('8')}, false, false, "Kyverno counts it as a failed verification"},
		{"server error under Audit is audited", base("", ""), Input{Image: repo + "@" + digestOf('8')}, true, true, "audit"},
		{"unmatched allowed with only kyverno", base("  validationFailureAction: Enforce\n", ""), Input{Image: "quay.io/x/y@" + d1}, true, false, "unmatched images are allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.v.sign(repo+"@"+d1, e.fpB)
			e.v.incomplete[digestOf('9')] = true
			e.v.serverError[digestOf('8')] = true
			d := e.engine(tc.doc).Evaluate(context.Background(), tc.in)
			if d.Allowed != tc.allowed || d.Audited != tc.audited || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("%+v", d)
			}
		})
	}
}

func TestNamespacedPolicyPerNamespace(t *testing.T) {
	e := newEnv(t)
	const repo = "ghcr.io/team/app"
	d1 := digestOf('1')
	e.v.sign(repo+"@"+d1, e.fpA)
	eng := e.engine(`apiVersion: kyverno.io/v1
kind: Policy
metadata: {name: strict, namespace: secure}
spec:
  validationFailureAction: Enforce
  rules:
  - name: r
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["*"]
      attestors:
      - entries:
        - keys: {publicKeys: KEYB, rekor: {ignoreTlog: true}}
`)
	in := Input{Image: repo + "@" + d1, Namespace: "secure"}
	if d := eng.Evaluate(context.Background(), in); d.Allowed {
		t.Fatalf("secure: %+v", d)
	}
	in.Namespace = "other"
	if d := eng.Evaluate(context.Background(), in); !d.Allowed || d.Rule != "" {
		t.Fatalf("other: %+v", d)
	}
}

func TestEvaluateNoPolicy(t *testing.T) {
	eng := NewEngine(&Store{}, newFake(), EngineOptions{})
	if d := eng.Evaluate(context.Background(), Input{Image: "nginx"}); d.Allowed || !strings.Contains(d.Reason, "no policy") {
		t.Fatalf("%+v", d)
	}
}

func TestResolveIncomplete(t *testing.T) {
	for _, fp := range []string{"Fail", "Ignore"} {
		e := newEnv(t)
		e.v.resolveErr = fmt.Errorf("%w: dial tcp: connection refused", cosign.ErrIncomplete)
		d := e.engine(native("  failurePolicy: "+fp+"\n", verifyA)).Evaluate(context.Background(), Input{Image: "registry.example.com/team/app:v1"})
		if fp == "Fail" && (d.Allowed || !strings.Contains(d.Reason, "could not be resolved")) {
			t.Fatalf("%s: %+v", fp, d)
		}
		// Failing open still names no digest: the proxy refuses to pull a tag.
		if fp == "Ignore" && (!d.Allowed || !d.FailedOpen || d.Digest != "") {
			t.Fatalf("%s: %+v", fp, d)
		}
	}
}

func TestResolveErrorsKyverno(t *testing.T) {
	doc := `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: k}
spec:
  validationFailureAction: Enforce
  failurePolicy: Ignore
  rules:
  - name: r
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["registry.example.com/*"]
      attestors:
      - entries:
        - keys: {publicKeys: KEYA, rekor: {ignoreTlog: true}}
`
	for _, tc := range []struct {
		err     error
		allowed bool
	}{
		{fmt.Errorf("%w: resolving: %w", cosign.ErrIncomplete, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), true},
		{fmt.Errorf("%w: resolving: registry answered 500", cosign.ErrIncomplete), false},
		{errors.New("tag not found"), false},
	} {
		e := newEnv(t)
		e.v.resolveErr = tc.err
		d := e.engine(doc).Evaluate(context.Background(), Input{Image: "registry.example.com/team/app:v1"})
		if d.Allowed != tc.allowed || (d.Allowed && !d.FailedOpen) {
			t.Errorf("%v: %+v", tc.err, d)
		}
	}
}

func TestVerificationTimeout(t *testing.T) {
	e := newEnv(t)
	e.v.gate = make(chan struct{}) // never opens: Verify waits for its deadline
	eng := e.engine(native("  verificationTimeout: 50ms\n", verifyA))
	d := eng.Evaluate(context.Background(), Input{Image: "registry.example.com/team/app@" + digestOf('1')})
	if d.Allowed || !strings.Contains(d.Reason, "could not complete") {
		t.Fatalf("%+v", d)
	}
	if !errors.Is(fmt.Errorf("%w", cosign.ErrIncomplete), cosign.ErrIncomplete) {
		t.Fatal("unreachable")
	}
}

func TestNoResolutionForEnforcedDenial(t *testing.T) {
	e := newEnv(t)
	e.v.tags["ghcr.io/other/app:v1"] = digestOf('1')
	eng := e.engine(native("", verifyA+"  - name: nope\n    images: [\"quay.io/*\"]\n    action: Deny\n"))
	for _, img := range []string{"ghcr.io/other/app:v1", "quay.io/x/y:1"} {
		if d := eng.Evaluate(context.Background(), Input{Image: img}); d.Allowed {
			t.Fatalf("%s: %+v", img, d)
		}
	}
	if n := e.v.resolves.Load(); n != 0 {
		t.Fatalf("%d registry calls for images denied by policy alone", n)
	}
}

func TestIncompleteReasonSaysItOnce(t *testing.T) {
	e := newEnv(t)
	img := "registry.example.com/team/app@" + digestOf('7')
	e.v.incomplete[digestOf('7')] = true
	d := e.engine(native("", verifyA)).Evaluate(context.Background(), Input{Image: img})
	if d.Allowed || strings.Count(d.Reason, "could not complete") != 1 {
		t.Fatalf("reason should say once that the verification could not complete: %q", d.Reason)
	}
}

// TestRuleIdentityCannotCollide: rules of different policies never share a
// verdict-cache entry or a verification, even when their names, joined, read
// the same ("a/b" + "c" vs "a" + "b/c"), or when a ClusterPolicy and a namespaced
// Policy share a name and rule name with different keys.
func TestRuleIdentityCannotCollide(t *testing.T) {
	e := newEnv(t)
	const repo = "registry.example.com/team/app"
	d := digestOf('5')
	e.v.sign(repo+"@"+d, e.fpA) // signed by key A only

	slashes := `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: a/b}
spec:
  rules:
  - name: c
    images: ["registry.example.com/*"]
    namespaces: ["prod"]
    attestors: {entries: [{key: {data: KEYA}}]}
---
apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: a}
spec:
  unmatchedImages: Allow
  rules:
  - name: b/c
    images: ["registry.example.com/*"]
    namespaces: ["dev"]
    attestors: {entries: [{key: {data: KEYB}}]}
`
	set, err := loadString(t, e.expand(slashes))
	if err == nil {
		eng := NewEngine(NewStaticStore(set), e.v, EngineOptions{Clock: e.now})
		if d := eng.Evaluate(context.Background(), Input{Image: repo + "@" + d, Namespace: "prod"}); !d.Allowed {
			t.Fatalf("prod (key A) denied: %s", d.Reason)
		}
		if d := eng.Evaluate(context.Background(), Input{Image: repo + "@" + d, Namespace: "dev"}); d.Allowed {
			t.Fatalf("dev needs key B, which never signed, but was allowed (cached=%v): the two rules share an identity", d.Cached)
		}
	}

	// Policy p rule r, alike but for kind, namespace and key.
	policyPR := func(kindAndMetadata, key string) string {
		return "apiVersion: kyverno.io/v1\n" + kindAndMetadata + `
spec:
  validationFailureAction: Enforce
  rules:
  - name: r
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["registry.example.com/*"]
      attestors: [{entries: [{keys: {publicKeys: ` + key + `, rekor: {ignoreTlog: true}}}]}]
`
	}
	sameNames := policyPR("kind: ClusterPolicy\nmetadata: {name: p}", "KEYA") + "---\n" +
		policyPR("kind: Policy\nmetadata: {name: p, namespace: ns1}", "KEYB")
	eng := e.engine(sameNames)
	if d := eng.Evaluate(context.Background(), Input{Image: repo + "@" + d, Namespace: "ns1"}); d.Allowed {
		t.Fatalf("ns1's Policy needs key B, which never signed, but the image was allowed: %+v", d.Rules)
	}
}

// TestKyvernoGeneratedRuleNamesUnique: a rule with several verifyImages entries
// becomes rules r[0], r[1]...; a real rule of that name is refused.
func TestKyvernoGeneratedRuleNamesUnique(t *testing.T) {
	e := newEnv(t)
	entry := `    - imageReferences: ["registry.example.com/*"]
      mutateDigest: false
      attestors: [{entries: [{keys: {publicKeys: KEYA, rekor: {ignoreTlog: true}}}]}]
`
	// rule is a Pod rule with n verifyImages entries.
	rule := func(name string, n int) string {
		return "  - name: " + name + "\n    match: {any: [{resources: {kinds: [Pod]}}]}\n    verifyImages:\n" + strings.Repeat(entry, n)
	}
	const head = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: p}\nspec:\n  rules:\n"
	doc := head + rule("r", 2) + rule("r[0]", 1)
	if _, err := loadString(t, e.expand(doc)); err == nil || !strings.Contains(err.Error(), `"r[0]"`) {
		t.Fatalf("load = %v, want a refusal naming r[0]", err)
	}
	reversed := head + rule("r[0]", 1) + rule("r", 2)
	if _, err := loadString(t, e.expand(reversed)); err == nil || !strings.Contains(err.Error(), "collides") {
		t.Fatalf("load = %v, want a refusal naming the collision", err)
	}
}
