package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadDocuments: no input panics, and whatever loads is internally sound.
func FuzzLoadDocuments(f *testing.F) {
	f.Add([]byte(docsPolicy))
	f.Add([]byte(native("  mode: Audit\n", "  - name: r\n    images: [\"*\"]\n    action: Allow\n")))
	f.Add([]byte("---\napiVersion: v1\nkind: ConfigMap\n---\n"))
	f.Add([]byte(`{"apiVersion":"kyverno.io/v1","kind":"Policy","metadata":{"name":"x","namespace":"y"},"spec":{"rules":[{"name":"r","match":{"all":[{"resources":{"kinds":["Pod"]}}]},"verifyImages":[{"image":"*"}]}]}}`))
	f.Add([]byte("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec: {rules: [{name: a, match: {resources: {kinds: [Pod]}}, verifyImages: [{imageReferences: ['*'], attestors: [{count: 1, entries: [{keys: {publicKeys: x}}]}]}]}]}\n"))
	// Keyless, Rekor-backed keys and attestations with conditions.
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "policies", "sigstore", "*.yaml"))
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		total := 0
		pols, _, errs := loadDocuments("fuzz.yaml", data, &total)
		if len(errs) == 0 && len(pols) > 0 {
			// Whatever loads evaluates without panicking, and fails closed on
			// a registry that knows nothing.
			eng := NewEngine(NewStaticStore(&Set{Policies: pols}), newFake(), EngineOptions{})
			for _, in := range []Input{{Image: "nginx", Namespace: "default"}, {Image: "ghcr.io/a/b:c", Local: true}, {Image: "ghcr.io/a/b@" + digestOf('1')}} {
				d := eng.Evaluate(context.Background(), in)
				for _, o := range d.Rules {
					if o.Action == Verify && o.Result == "pass" {
						t.Fatalf("verified against a registry with no signatures: %+v", d)
					}
				}
				if d.Allowed && in.Local && len(d.Rules) > 0 && !d.Audited {
					for _, o := range d.Rules {
						if o.Action != Allow {
							t.Fatalf("local image allowed by a %s rule: %+v", o.Action, d)
						}
					}
				}
			}
		}
		for _, p := range pols {
			if p.Name == "" {
				t.Fatal("policy without a name")
			}
			for _, r := range p.Rules {
				if len(r.Images) == 0 {
					t.Fatal("rule without images")
				}
				if r.Action == Verify {
					// A Kyverno entry without attestors fails every image
					// (judgeCheap); an ImagePolicy rule needs some.
					if len(r.Attestors) == 0 && len(r.Attestations) == 0 && p.Source == SourceImagePolicy {
						t.Fatal("verify rule without attestors")
					}
					for _, at := range r.Attestations {
						if len(at.Sets) == 0 || at.PredicateType == "" {
							t.Fatalf("attestation %+v without attestors or type", at)
						}
					}
					for _, a := range r.allSets() {
						if a.Count < 1 || a.Count > len(a.Attestors) {
							t.Fatalf("count %d of %d attestors", a.Count, len(a.Attestors))
						}
						for _, at := range a.Attestors {
							if (at.Key == nil) == (len(at.Identities) == 0) {
								t.Fatalf("attestor %+v is neither a key nor keyless", at)
							}
						}
					}
				}
				for _, im := range r.Images {
					if strings.ContainsAny(im, " \t\n[]{}") {
						t.Fatalf("pattern %q accepted", im)
					}
				}
			}
		}
	})
}
