package policy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docsPolicy is the check-image ClusterPolicy from Kyverno's verifyImages
// documentation (writing-policies/verify-images/sigstore), verbatim.
const docsPolicy = `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: check-image
spec:
  validationFailureAction: Enforce
  background: false
  webhookTimeoutSeconds: 30
  failurePolicy: Fail
  rules:
    - name: check-image
      match:
        any:
        - resources:
            kinds:
              - Pod
      verifyImages:
      - imageReferences:
        - "ghcr.io/kyverno/test-verify-image*"
        attestors:
        - count: 1
          entries:
          - keys:
              publicKeys: |-
                -----BEGIN PUBLIC KEY-----
                MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8nXRh950IZbRj8Ra/N9sbqOPZrfM
                5/KAQN0/KjHcorm/J5yctVd7iEcnessRQjU917hmKO6JWVGHpDguIyakZA==
                -----END PUBLIC KEY-----
              rekor:
                ignoreTlog: true
                url: https://rekor.sigstore.dev
`

const docsKey = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8nXRh950IZbRj8Ra/N9sbqOPZrfM
5/KAQN0/KjHcorm/J5yctVd7iEcnessRQjU917hmKO6JWVGHpDguIyakZA==
-----END PUBLIC KEY-----
`

func TestLoadKyvernoDocsExample(t *testing.T) {
	set := mustLoad(t, docsPolicy)
	// The one warning: a set of only Kyverno policies admits images no rule
	// matches beside a Verify rule (issue 11 §1).
	if len(set.Policies) != 1 || len(set.Warnings) != 1 || !strings.Contains(set.Warnings[0].Message, "a set of only Kyverno policies") {
		t.Fatalf("policies %d warnings %v", len(set.Policies), set.Warnings)
	}
	p := set.Policies[0]
	if p.Name != "check-image" || p.Source != SourceClusterPolicy || p.Mode != Enforce || p.FailurePolicy != Fail || p.Timeout != 30*time.Second || p.Unmatched != "" {
		t.Fatalf("policy %+v", p)
	}
	if len(p.Rules) != 1 {
		t.Fatalf("rules %d", len(p.Rules))
	}
	r := p.Rules[0]
	if r.Name != "check-image" || r.Action != Verify || len(r.Images) != 1 || r.Images[0] != "ghcr.io/kyverno/test-verify-image*" {
		t.Fatalf("rule %+v", r)
	}
	if len(r.Attestors) != 1 || r.Attestors[0].Count != 1 || len(r.Attestors[0].Attestors) != 1 {
		t.Fatalf("attestors %+v", r.Attestors)
	}
	if r.RequireDigestReference || r.NoCache {
		t.Fatalf("defaults: %+v", r)
	}
}

func TestLoadNativeDefaults(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "team.pub", testKey(t))
	p := writeFile(t, dir, "p.yaml", `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: default}
spec:
  rules:
  - name: demo
    images: ["registry.example.com/team/*"]
    attestors:
      entries:
      - key: {file: team.pub}
`)
	set, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	pol := set.Policies[0]
	if pol.Mode != Enforce || pol.Unmatched != Deny || pol.FailurePolicy != Fail || pol.Timeout != 10*time.Second || pol.CacheTTL != 10*time.Minute || pol.CacheMax != 10000 {
		t.Fatalf("defaults %+v", pol)
	}
	r := pol.Rules[0]
	if r.Action != Verify || r.Attestors[0].Count != 1 || r.Attestors[0].Attestors[0].Key.Name != filepath.Join(dir, "team.pub") {
		t.Fatalf("rule %+v %+v", r, r.Attestors[0].Attestors[0].Key)
	}
	if set.Digest == "" {
		t.Fatal("no digest")
	}
}

func TestLoadNativeFull(t *testing.T) {
	k1, k2 := testKey(t), testKey(t)
	set := mustLoad(t, `apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: full, labels: {a: b}}
spec:
  mode: Audit
  unmatchedImages: Allow
  failurePolicy: Ignore
  verificationTimeout: 3s
  cache: {ttl: 1m, maxEntries: 5}
  rules:
  - name: team
    images: ["registry.example.com/team/*"]
    excludeImages: ["registry.example.com/team/tools/*"]
    namespaces: ["prod-*", "default"]
    action: Verify
    signatureRepository: registry.example.com/sigs
    attestors:
      count: 1
      entries:
      - key:
          data: `+strconv.Quote(k1)+`
      - key:
          data: `+strconv.Quote(k2)+`
          signatureAlgorithm: sha384
  - name: pause
    images: ["registry.k8s.io/pause:*"]
    action: Allow
  - name: evil
    images: ["evil.example.com/*"]
    action: Deny
`)
	p := set.Policies[0]
	if p.Mode != Audit || p.Unmatched != Allow || p.FailurePolicy != Ignore || p.Timeout != 3*time.Second || p.CacheTTL != time.Minute || p.CacheMax != 5 {
		t.Fatalf("%+v", p)
	}
	r := p.Rules[0]
	if r.Attestors[0].Count != 1 || len(r.Attestors[0].Attestors) != 2 || r.Attestors[0].Repository != "registry.example.com/sigs" || r.Attestors[0].Attestors[1].Key.Algorithm != "sha384" {
		t.Fatalf("%+v", r.Attestors[0])
	}
	if p.Rules[1].Action != Allow || p.Rules[2].Action != Deny {
		t.Fatal("actions")
	}
}

// jsonDoc builds a policy document as JSON (YAML's superset) so that refusal
// cases can change one field precisely.
type jsonDoc map[string]any

func (d jsonDoc) set(t *testing.T, path string, v any) jsonDoc {
	t.Helper()
	var cur any = map[string]any(d)
	parts := strings.Split(path, ".")
	for i, part := range parts {
		name, idx := part, -1
		if j := strings.IndexByte(part, '['); j >= 0 {
			name = part[:j]
			n, err := strconv.Atoi(strings.TrimSuffix(part[j+1:], "]"))
			if err != nil {
				t.Fatal(err)
			}
			idx = n
		}
		m := cur.(map[string]any)
		last := i == len(parts)-1
		if idx < 0 {
			if last {
				if v == nil {
					delete(m, name)
				} else {
					m[name] = v
				}
				return d
			}
			if _, ok := m[name]; !ok {
				m[name] = map[string]any{}
			}
			cur = m[name]
			continue
		}
		l := m[name].([]any)
		if last {
			l[idx] = v
			return d
		}
		cur = l[idx]
	}
	return d
}

func (d jsonDoc) String() string {
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func kyvernoJSON(pemKey string) jsonDoc {
	var d jsonDoc
	js := `{"apiVersion":"kyverno.io/v1","kind":"ClusterPolicy","metadata":{"name":"check-image"},
"spec":{"validationFailureAction":"Enforce","webhookTimeoutSeconds":30,"failurePolicy":"Fail",
"rules":[{"name":"check-image","match":{"any":[{"resources":{"kinds":["Pod"]}}]},
"verifyImages":[{"imageReferences":["ghcr.io/kyverno/*"],"attestors":[{"count":1,"entries":[{"keys":{"publicKeys":` +
		strconv.Quote(pemKey) + `,"rekor":{"ignoreTlog":true,"url":"https://rekor.sigstore.dev"}}}]}]}]}]}}`
	if err := json.Unmarshal([]byte(js), &d); err != nil {
		panic(err)
	}
	return d
}

func nativeDocJSON(pemKey string) jsonDoc {
	var d jsonDoc
	js := `{"apiVersion":"criguard.dev/v1alpha1","kind":"ImagePolicy","metadata":{"name":"default"},
"spec":{"rules":[{"name":"demo","images":["registry.example.com/*"],"attestors":{"entries":[{"key":{"data":` + strconv.Quote(pemKey) + `}}]}}]}}`
	if err := json.Unmarshal([]byte(js), &d); err != nil {
		panic(err)
	}
	return d
}

func TestLoadRefusals(t *testing.T) {
	key := testKey(t)
	const vi = "spec.rules[0].verifyImages[0]"
	const ent = vi + ".attestors[0].entries[0]"
	const nr = "spec.rules[0]"
	cases := []struct {
		name     string
		doc      func(t *testing.T) jsonDoc
		wantPath string
		wantMsg  string
	}{
		// native
		{"native unknown field", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".imagez", []any{"x"}) }, nr + ".imagez", "unknown field"},
		{"native unknown nested field", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".attestors.entries[0].key.fil", "x") }, nr + ".attestors.entries[0].key.fil", "unknown field"},
		{"native wrong type", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "spec.verificationTimeout", 10) }, "spec.verificationTimeout", "expected a string"},
		{"native bad transparencyLog", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0].key.transparencyLog", "Sometimes")
		}, nr + ".attestors.entries[0].key.transparencyLog", "unknown value"},
		{"native key and keyless", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0].keyless", map[string]any{"identities": []any{map[string]any{"issuer": "i", "subject": "s"}}})
		}, nr + ".attestors.entries[0]", "not both"},
		{"native keyless without identities", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0]", map[string]any{"keyless": map[string]any{}})
		}, nr + ".attestors.entries[0].keyless.identities", "required"},
		{"native keyless identity without issuer", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0]", map[string]any{"keyless": map[string]any{"identities": []any{map[string]any{"subject": "s"}}}})
		}, nr + ".attestors.entries[0].keyless.identities[0].issuer", "exactly one"},
		{"native attestation bad type", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestations", []any{map[string]any{"predicateType": "nope"}})
		}, nr + ".attestations[0].predicateType", "neither"},
		{"native bad mode", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "spec.mode", "enforce") }, "spec.mode", "unknown value"},
		{"native bad unmatched", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "spec.unmatchedImages", "Maybe") }, "spec.unmatchedImages", "unknown value"},
		{"native bad failurePolicy", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "spec.failurePolicy", "Open") }, "spec.failurePolicy", "unknown value"},
		{"native bad action", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".action", "Skip") }, nr + ".action", "unknown value"},
		{"native bad timeout", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "spec.verificationTimeout", "soon") }, "spec.verificationTimeout", "not a duration"},
		{"native zero timeout", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "spec.verificationTimeout", "0s") }, "spec.verificationTimeout", "out of range"},
		{"native bad ttl", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, "spec.cache", map[string]any{"ttl": "-1m"})
		}, "spec.cache.ttl", "out of range"},
		{"native bad maxEntries", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, "spec.cache", map[string]any{"maxEntries": -1})
		}, "spec.cache.maxEntries", "out of range"},
		{"native no name", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "metadata.name", nil) }, "metadata.name", "required"},
		{"native rule no name", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".name", nil) }, nr + ".name", "required"},
		{"native no images", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".images", nil) }, nr + ".images", "required"},
		{"native bad glob", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".images", []any{"registry.example.com/[ab]*"})
		}, nr + ".images[0]", "only '*' and '?'"},
		{"native empty glob", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".namespaces", []any{""}) }, nr + ".namespaces[0]", "empty pattern"},
		{"native bad exclude glob", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".excludeImages", []any{"a b"}) }, nr + ".excludeImages[0]", "whitespace"},
		{"native unreadable key", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0].key", map[string]any{"file": "/nonexistent/k.pub"})
		}, nr + ".attestors.entries[0].key.file", "no such file"},
		{"native bad key data", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0].key", map[string]any{"data": "not a key"})
		}, nr + ".attestors.entries[0].key.data", "not a PEM public key"},
		{"native bad algorithm", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0].key", map[string]any{"data": key, "signatureAlgorithm": "md5"})
		}, nr + ".attestors.entries[0].key.data", "unknown signature algorithm"},
		{"native file and data", func(t *testing.T) jsonDoc {
			return nativeDocJSON(key).set(t, nr+".attestors.entries[0].key", map[string]any{"data": key, "file": "/x"})
		}, nr + ".attestors.entries[0].key", "not both"},
		{"native count too big", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".attestors.count", 2) }, nr + ".attestors.count", "out of range"},
		{"native count zero", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".attestors.count", 0) }, nr + ".attestors.count", "out of range"},
		{"native verify without keys", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".attestors", nil) }, nr + ".attestors.entries", "at least one key"},
		{"native allow with attestors", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".action", "Allow") }, nr + ".attestors", "only apply to action Verify"},
		{"native bad repository", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, nr+".signatureRepository", "UPPER/Case") }, nr + ".signatureRepository", "not a repository"},
		{"native wrong version", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "apiVersion", "criguard.dev/v2") }, "apiVersion", "unknown version"},
		{"native wrong kind", func(t *testing.T) jsonDoc { return nativeDocJSON(key).set(t, "kind", "ImagePolicies") }, "kind", "unknown kind"},
		// Kyverno
		{"kyverno unknown field", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".imageReference", []any{"x"}) }, vi + ".imageReference", "unknown field"},
		{"kyverno keyless", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent, map[string]any{"keyless": map[string]any{"subject": "x"}})
		}, ent + ".keyless.issuer", "issuer"},
		{"kyverno keyless bad regexp", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent, map[string]any{"keyless": map[string]any{"subjectRegExp": "(", "issuer": "y"}})
		}, ent + ".keyless.subjectRegExp", "regular expression"},
		{"kyverno keyless unknown extension", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent, map[string]any{"keyless": map[string]any{"subject": "x", "issuer": "y", "additionalExtensions": map[string]any{"buildTrigger": "push"}}})
		}, ent + ".keyless.additionalExtensions.buildTrigger", "unknown extension"},
		{"kyverno keyless bad roots", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent, map[string]any{"keyless": map[string]any{"subject": "x", "issuer": "y", "roots": "not pem"}})
		}, ent + ".keyless.roots", "PEM"},
		{"kyverno certificates", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent, map[string]any{"certificates": map[string]any{"cert": "x"}})
		}, ent + ".certificates", "certificate attestors (a fixed signing certificate and chain) are not supported"},
		{"kyverno attestation without attestors", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, vi+".attestations", []any{map[string]any{"type": "https://slsa.dev/provenance/v1"}})
		}, vi + ".attestations[0].attestors", "signed"},
		{"kyverno attestation bad condition", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, vi+".attestations", []any{map[string]any{"type": "vuln", "conditions": []any{map[string]any{"all": []any{map[string]any{"key": "{{ a }}", "operator": "Matches", "value": 1}}}}}})
		}, vi + ".attestations[0].conditions", "operator"},
		{"kyverno nested attestor", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent, map[string]any{"attestor": map[string]any{"entries": []any{}}})
		}, ent + ".attestor", "nested"},
		{"kyverno kms", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, ent+".keys.kms", "awskms:///alias/x") }, ent + ".keys.kms", "KMS"},
		{"kyverno secret", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent+".keys.secret", map[string]any{"name": "k", "namespace": "n"})
		}, ent + ".keys.secret", "Secret"},
		{"kyverno k8s publicKeys", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, ent+".keys.publicKeys", "k8s://ns/secret") }, ent + ".keys.publicKeys", "k8s://"},
		{"kyverno variable publicKeys", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent+".keys.publicKeys", "{{ keys.data.prod }}")
		}, ent + ".keys.publicKeys", "variables"},
		{"kyverno tsa", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent+".keys.ctlog", map[string]any{"tsaCertChain": "x"})
		}, ent + ".keys.ctlog.tsaCertChain", "not PEM"},
		{"kyverno rekor pubkey", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent+".keys.rekor", map[string]any{"ignoreTlog": true, "pubkey": "x"})
		}, ent + ".keys.rekor.pubkey", "no use"},
		{"kyverno attestations", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, vi+".attestations", []any{map[string]any{"predicateType": "x"}})
		}, vi + ".attestations[0].predicateType", "neither"},
		{"kyverno notary", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".type", "Notary") }, vi + ".type", "not supported"},
		{"kyverno sigstore bundle type", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".type", "SigstoreBundle") }, vi + ".type", "not supported"},
		{"kyverno deprecated key", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".key", key) }, vi + ".key", "cannot be combined"},
		{"kyverno annotations", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent+".annotations", map[string]any{"a": "b"})
		}, ent + ".annotations", "annotation"},
		{"kyverno preconditions", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].preconditions", map[string]any{"all": []any{map[string]any{"key": "a", "operator": "Equals", "value": "b"}}})
		}, "spec.rules[0].preconditions", "preconditions"},
		{"kyverno context", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].context", []any{map[string]any{"name": "keys", "configMap": map[string]any{"name": "k", "namespace": "d"}}})
		}, "spec.rules[0].context", "context"},
		{"kyverno validate in verifyImages", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, vi+".validate", map[string]any{"message": "m", "deny": map[string]any{}})
		}, vi + ".validate", "validate"},
		{"kyverno bad action", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "spec.validationFailureAction", "Block") }, "spec.validationFailureAction", "unknown value"},
		{"kyverno bad rule action", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".failureAction", "Warn") }, vi + ".failureAction", "unknown value"},
		{"kyverno bad failurePolicy", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "spec.failurePolicy", "fail") }, "spec.failurePolicy", "unknown value"},
		{"kyverno timeout range", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "spec.webhookTimeoutSeconds", 31) }, "spec.webhookTimeoutSeconds", "out of range"},
		{"kyverno sha224", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, ent+".keys.signatureAlgorithm", "sha224") }, ent + ".keys.signatureAlgorithm", "unknown signature algorithm"},
		{"kyverno count too big", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".attestors[0].count", 2) }, vi + ".attestors[0].count", "out of range"},
		{"kyverno no imageReferences", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, vi+".imageReferences", nil) }, vi + ".imageReferences", "required"},
		{"kyverno namespace selector", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].match.any[0].resources.namespaceSelector", map[string]any{"matchLabels": map[string]any{"a": "b"}})
		}, "spec.rules[0].match.any[0].resources.namespaceSelector", "namespace labels"},
		{"kyverno selector", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].match.any[0].resources.selector", map[string]any{"matchLabels": map[string]any{"a": "b"}})
		}, "spec.rules[0].match.any[0].resources.selector", "label selectors"},
		{"kyverno user info", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].match.any[0].clusterRoles", []any{"admin"})
		}, "spec.rules[0].match.any[0].clusterRoles", "user"},
		{"kyverno applyRules One", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "spec.applyRules", "One") }, "spec.applyRules", "not supported"},
		{"kyverno override selector", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.validationFailureActionOverrides", []any{map[string]any{"action": "Audit", "namespaceSelector": map[string]any{"matchLabels": map[string]any{"a": "b"}}}})
		}, "spec.validationFailureActionOverrides[0].namespaceSelector", "namespace labels"},
		{"kyverno match conditions", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.webhookConfiguration", map[string]any{"matchConditions": []any{map[string]any{"name": "a", "expression": "true"}}})
		}, "spec.webhookConfiguration.matchConditions", "CEL"},
		{"kyverno entries repos differ", func(t *testing.T) jsonDoc {
			d := kyvernoJSON(key)
			e0 := map[string]any{"repository": "ghcr.io/a/sigs", "keys": map[string]any{"publicKeys": key, "rekor": map[string]any{"ignoreTlog": true}}}
			e1 := map[string]any{"repository": "ghcr.io/b/sigs", "keys": map[string]any{"publicKeys": key, "rekor": map[string]any{"ignoreTlog": true}}}
			return d.set(t, vi+".attestors[0].entries", []any{e0, e1})
		}, vi + ".attestors[0].entries[1].repository", "same signature repository"},
		{"kyverno verify plus validate", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].validate", map[string]any{"message": "m"})
		}, "spec.rules[0]", "must not also"},
		{"kyverno policy without namespace", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "kind", "Policy") }, "metadata.namespace", "required"},
		{"kyverno namespaced policy filters namespaces", func(t *testing.T) jsonDoc {
			d := kyvernoJSON(key).set(t, "kind", "Policy").set(t, "metadata.namespace", "team")
			return d.set(t, "spec.rules[0].match.any[0].resources.namespaces", []any{"other"})
		}, "spec.rules[0].match.any[0].resources.namespaces", "namespaced Policy"},
		{"kyverno cluster policy with namespace", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "metadata.namespace", "x") }, "metadata.namespace", "cluster-wide"},
		{"kyverno image validating policy", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "apiVersion", "policies.kyverno.io/v1").set(t, "kind", "ImageValidatingPolicy")
		}, "kind", "not supported"},
		{"kyverno unknown version", func(t *testing.T) jsonDoc { return kyvernoJSON(key).set(t, "apiVersion", "kyverno.io/v3") }, "apiVersion", "unknown version"},
		{"kyverno bad operation", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, "spec.rules[0].match.any[0].resources.operations", []any{"CREAT"})
		}, "spec.rules[0].match.any[0].resources.operations[0]", "unknown operation"},
		{"kyverno bad image glob", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, vi+".skipImageReferences", []any{"ghcr.io/{a,b}"})
		}, vi + ".skipImageReferences[0]", "only '*' and '?'"},
		{"kyverno bad key", func(t *testing.T) jsonDoc {
			return kyvernoJSON(key).set(t, ent+".keys.publicKeys", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
		}, ent + ".keys.publicKeys", "not a PEM public key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := "# leading comment document\n---\n" + tc.doc(t).String() + "\n"
			_, err := loadString(t, doc)
			if err == nil {
				t.Fatalf("loaded; want refusal at %s", tc.wantPath)
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %T %v is not a *LoadError", err, err)
			}
			if le.Document != 2 || le.Path != tc.wantPath || !strings.Contains(le.Msg, tc.wantMsg) || !strings.HasSuffix(le.File, "policy.yaml") {
				t.Fatalf("got %q (doc %d path %q)\nwant document 2, path %q, message containing %q", err, le.Document, le.Path, tc.wantPath, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), "policy.yaml: document 2: "+tc.wantPath) {
				t.Fatalf("error text %q does not locate the field", err)
			}
		})
	}
}

func TestLoadKyvernoFeatures(t *testing.T) {
	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	d := kyvernoJSON(k1)
	d.set(t, "spec.rules[0].verifyImages[0].attestors[0].entries[0].keys.publicKeys", k1+k2)
	d.set(t, "spec.rules[0].verifyImages[0].attestors[0].count", nil)
	d.set(t, "spec.rules[0].verifyImages[0].skipImageReferences", []any{"ghcr.io/kyverno/trusted/*"})
	d.set(t, "spec.rules[0].verifyImages[0].repository", "ghcr.io/kyverno/signatures")
	d.set(t, "spec.rules[0].verifyImages[0].mutateDigest", false)
	d.set(t, "spec.rules[0].verifyImages[0].useCache", false)
	d.set(t, "spec.rules[0].verifyImages[0].required", true)
	d.set(t, "spec.rules[0].verifyImages[0].failureAction", "Audit")
	d.set(t, "spec.rules[0].verifyImages[0].imageRegistryCredentials", map[string]any{"secrets": []any{"regcred"}})
	d.set(t, "spec.rules[0].match.any[0].resources.namespaces", []any{"prod-*"})
	d.set(t, "spec.rules[0].exclude", map[string]any{"any": []any{map[string]any{"resources": map[string]any{"namespaces": []any{"prod-tools"}}}}})
	d.set(t, "spec.validationFailureAction", "enforce")
	// A second verifyImages entry and a second rule that is not verifyImages.
	rules := d["spec"].(map[string]any)["rules"].([]any)
	rules = append(rules, map[string]any{"name": "require-labels", "match": map[string]any{"any": []any{map[string]any{"resources": map[string]any{"kinds": []any{"Pod"}}}}},
		"validate": map[string]any{"message": "label app required", "pattern": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "?*"}}}}})
	d["spec"].(map[string]any)["rules"] = rules
	doc2 := `---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
data: {a: b}
---
apiVersion: kyverno.io/v2
kind: PolicyException
metadata: {name: ex, namespace: kyverno}
spec: {}
---
apiVersion: kyverno.io/v1
kind: Policy
metadata: {name: team, namespace: team-a}
spec:
  webhookConfiguration: {failurePolicy: Ignore, timeoutSeconds: 5}
  rules:
  - name: two-sets
    match:
      resources: {kinds: [Deployment]}
    verifyImages:
    - image: "docker.io/team/*"
      mutateDigest: false
      attestors:
      - entries:
        - keys:
            publicKeys: ` + strconv.Quote(k3) + `
            rekor: {ignoreTlog: true}
      - entries:
        - signatureAlgorithm: sha512
          keys:
            publicKeys: ` + strconv.Quote(k2) + `
            rekor: {ignoreTlog: true}
`
	set := mustLoad(t, d.String()+"\n"+doc2)
	if len(set.Policies) != 2 {
		t.Fatalf("policies: %d", len(set.Policies))
	}
	if len(set.Warnings) != 5 {
		t.Fatalf("warnings: %v", set.Warnings)
	}
	wantWarn := []string{"require-labels", "ConfigMap", "PolicyException", "imageRegistryCredentials", "images no rule matches are allowed"}
	all := ""
	for _, w := range set.Warnings {
		all += w.String() + "\n"
	}
	for _, w := range wantWarn {
		if !strings.Contains(all, w) {
			t.Errorf("no warning about %s in\n%s", w, all)
		}
	}
	p := set.Policies[0]
	r := p.Rules[0]
	if p.Mode != Enforce || r.Mode != Audit || !r.RequireDigestReference || !r.NoCache {
		t.Fatalf("modes/flags: %+v %+v", p, r)
	}
	if a := r.Attestors[0]; len(a.Attestors) != 2 || a.Count != 2 || a.Repository != "ghcr.io/kyverno/signatures" {
		t.Fatalf("two keys in one publicKeys must be two entries, all required: %+v", a)
	}
	if !r.appliesToNamespace("prod-web") || r.appliesToNamespace("prod-tools") || r.appliesToNamespace("dev") {
		t.Fatal("namespace match/exclude")
	}
	team := set.Policies[1]
	if team.Namespace != "team-a" || team.FailurePolicy != Ignore || team.Timeout != 5*time.Second || team.Mode != Audit {
		t.Fatalf("namespaced policy: %+v", team)
	}
	tr := team.Rules[0]
	if len(tr.Attestors) != 2 || tr.Attestors[1].Attestors[0].Key.Algorithm != "sha512" || tr.Images[0] != "docker.io/team/*" {
		t.Fatalf("%+v", tr)
	}
	if !tr.appliesToNamespace("team-a") || tr.appliesToNamespace("team-b") {
		t.Fatal("namespaced Policy must apply only to its namespace")
	}
}

func TestLoadDirectory(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", nativeDocJSON(key).String())
	writeFile(t, dir, "b.yml", kyvernoJSON(key).String())
	writeFile(t, dir, ".hidden.yaml", "not: [valid")
	writeFile(t, dir, "README.md", "not yaml at all: [")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub"), "c.yaml", "broken: [")
	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Policies) != 2 || set.Policies[0].Source != SourceImagePolicy || set.Policies[1].Source != SourceClusterPolicy {
		t.Fatalf("%+v", set.Policies)
	}

	// Every broken file is reported, each with its location.
	writeFile(t, dir, "c.yaml", "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: x}\nspec: {mode: Loud}\n")
	writeFile(t, dir, "d.yaml", "key: [unclosed\n")
	_, err = Load(dir)
	if err == nil || !strings.Contains(err.Error(), "c.yaml: document 1: spec.mode") || !strings.Contains(err.Error(), "d.yaml: document 1") {
		t.Fatalf("err = %v", err)
	}

	// The same policy twice is refused.
	os.Remove(filepath.Join(dir, "c.yaml"))
	os.Remove(filepath.Join(dir, "d.yaml"))
	writeFile(t, dir, "e.yaml", nativeDocJSON(key).String())
	if _, err = Load(dir); err == nil || !strings.Contains(err.Error(), "also defined") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadEmptyAndMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "no ImagePolicy") {
		t.Fatalf("empty dir: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "nope.yaml")); err == nil {
		t.Fatal("missing path loaded")
	}
	if _, err := loadString(t, "# only a comment\n---\n---\n"); err == nil {
		t.Fatal("comment-only file loaded")
	}
	if _, err := loadString(t, "- a list\n"); err == nil || !strings.Contains(err.Error(), "mapping") {
		t.Fatalf("list: %v", err)
	}
	if _, err := loadString(t, "apiVersion: criguard.dev/v1alpha1\napiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\n"); err == nil {
		t.Fatal("duplicate keys loaded")
	}
	big := strings.Repeat("#", MaxFileSize+1)
	if _, err := loadString(t, big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big: %v", err)
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "a: 1\n---\nb: 2\n--- # comment\nc: 3\n--- {d: 4}\n----\n---x\n"
	got := splitDocuments([]byte(in))
	want := []string{"a: 1\n", "b: 2\n", "c: 3\n", "{d: 4}\n----\n---x\n"}
	if len(got) != len(want) {
		t.Fatalf("%q", got)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("doc %d: %q, want %q", i, got[i], want[i])
		}
	}
}

// Check refuses what Load would refuse in one file, and accepts what Load
// accepts in it, without the set-wide checks.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "k.pub", testKey(t))
	native := func(keyFile string) string {
		return "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\nspec:\n  rules:\n  - name: r\n    images: [\"*\"]\n    attestors:\n      entries:\n      - key: {file: " + keyFile + "}\n"
	}
	for _, tc := range []struct {
		name, data, want string // want "" accepts
	}{
		{"valid, key file present", native(key), ""},
		{"key file missing on the node", native(dir + "/missing.pub"), "missing.pub"},
		{"unknown field", "apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: p}\nspec: {enforce: true}\n", "enforce"},
		{"not YAML", "a: [", "not valid YAML"},
		{"only a non-policy document", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(filepath.Join(dir, "f.yaml"), []byte(tc.data))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check = %v; want a refusal naming %q", err, tc.want)
			}
			// Load of a directory holding this file (and a valid one) agrees.
			d := t.TempDir()
			writeFile(t, d, "ok.yaml", strings.Replace(native(key), "name: p}", "name: other}", 1))
			writeFile(t, d, "f.yaml", tc.data)
			if _, lerr := Load(d); (lerr == nil) != (err == nil) {
				t.Fatalf("Check says %v but Load says %v", err, lerr)
			}
		})
	}
}
