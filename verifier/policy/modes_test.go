package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// kyvernoAuditAll is a Kyverno policy left in its default Audit mode over
// every image (issue 11 §2).
const kyvernoAuditAll = `---
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: k}
spec:
  rules:
  - name: everything
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["*"]
      mutateDigest: false
      verifyDigest: false
      attestors:
      - entries:
        - keys: {publicKeys: KEYB, rekor: {ignoreTlog: true}}
`

// TestAuditRuleDoesNotMakeImagesMatched is issue 11 §2: an Audit rule never
// makes an image "matched" for another policy's unmatchedImages: Deny. Before,
// the Kyverno Audit rule over "*" matched everything, so an unsigned image no
// ImagePolicy rule names ran (logged as audit).
func TestAuditRuleDoesNotMakeImagesMatched(t *testing.T) {
	const other = "ghcr.io/evil/x"
	tests := []struct {
		name             string
		spec             string
		image            string
		signers          []string
		allowed, audited bool
		policy, reason   string
	}{
		{"unmatched by Enforce rules: denied", "", other, nil, false, false, "p", "only Audit-mode rules match"},
		{"unmatched, even when the Audit rule passes", "", other, []string{"B"}, false, false, "p", "unmatchedImages is Deny"},
		{"matched by the Enforce rule: judged by it", "", "registry.example.com/team/app", []string{"A"}, true, true, "k", "audit: would deny"},
		{"both rules pass", "", "registry.example.com/team/app", []string{"A", "B"}, true, false, "p", "verified"},
		{"ImagePolicy in Audit mode: reported", "  mode: Audit\n", other, []string{"B"}, true, true, "p", "audit: only Audit-mode rules match"},
		// The Audit ImagePolicy's own rule matches and passes: matched by its
		// own rule, allowed, not reported as unmatched.
		{"ImagePolicy in Audit mode, its own rule passes", "  mode: Audit\n", "registry.example.com/team/app", []string{"A", "B"}, true, false, "p", "verified"},
		{"unmatchedImages Allow: allowed", "  unmatchedImages: Allow\n", other, []string{"B"}, true, false, "k", "verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			fps := e.fingerprints(tt.signers)
			d1 := digestOf('1')
			e.v.sign(tt.image+"@"+d1, fps...)
			eng := e.engine(native(tt.spec, verifyA) + kyvernoAuditAll)
			d := eng.Evaluate(context.Background(), Input{Image: tt.image + "@" + d1, Namespace: "default"})
			if d.Allowed != tt.allowed || d.Audited != tt.audited || d.Policy != tt.policy || !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("got allowed=%v audited=%v policy=%q reason %q", d.Allowed, d.Audited, d.Policy, d.Reason)
			}
		})
	}
}

// TestPolicyCheckExplainsCombinedUnmatched: Describe states the combined
// effect as the engine decides it, including the Audit-rule case that
// `criguard policy check` used to misstate.
func TestPolicyCheckExplainsCombinedUnmatched(t *testing.T) {
	e := newEnv(t)
	var out bytes.Buffer
	Describe(&out, mustLoad(t, e.expand(native("", verifyA)+kyvernoAuditAll)))
	for _, want := range []string{
		"images no rule matches: denied by policy p: no rule matches this image, and unmatchedImages is Deny",
		"images only Audit-mode rules match: denied by policy p: only Audit-mode rules match this image (k/everything: an Audit rule reports, it does not make an image matched), and unmatchedImages is Deny",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("policy check lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	Describe(&out, mustLoad(t, e.expand(strings.TrimPrefix(kyvernoAuditAll, "---\n"))))
	for _, want := range []string{
		"images no rule matches: allowed: no rule matches this image; unmatched images are allowed",
		"images only Audit-mode rules match: allowed: an Audit rule reports what it finds, it denies nothing",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Kyverno-only set: policy check lacks %q:\n%s", want, out.String())
		}
	}
}
