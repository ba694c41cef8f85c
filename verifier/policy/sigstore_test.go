package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/cosign"
)

var sigstoreImages = []string{"fx/github-main", "fx/key-attest", "fx/key-no-tlog", "fx/key-tlog-bundle", "fx/key-tlog-legacy",
	"fx/keyless-bob", "fx/keyless-bundle", "fx/keyless-legacy", "fx/unsigned"}

func sigstorePolicy(t *testing.T, name string) string {
	t.Helper()
	dir, err := fixtureregistry.Dir(fixtureregistry.Sigstore)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(filepath.Dir(dir), "policies", "sigstore", name)
}

// TestSigstorePolicies: Kyverno policies written as Kyverno documents them
// (testdata/policies/sigstore) load and judge the Sigstore fixtures through
// the real verifier, with and without the referrers API, as Kyverno would.
func TestSigstorePolicies(t *testing.T) {
	cases := []struct {
		policy string
		allow  []string
	}{
		// One keys.publicKeys attestor, no rekor field: a Rekor entry is required.
		{"verify-image.yaml", []string{"fx/key-attest", "fx/key-tlog-bundle", "fx/key-tlog-legacy"}},
		{"keyless-alice.yaml", []string{"fx/keyless-bundle", "fx/keyless-legacy"}},
		{"attest-slsa.yaml", []string{"fx/keyless-bundle", "fx/keyless-legacy"}},
		{"attest-vuln.yaml", []string{"fx/key-attest"}},
		// Kyverno's documented JMESPath-function conditions (attest's Kyverno functions).
		{"attest-vuln-age.yaml", []string{"fx/key-attest"}},
		{"attest-slsa-regex.yaml", []string{"fx/keyless-bundle", "fx/keyless-legacy"}},
		{"attest-slsa-generator.yaml", nil},
		{"native-key-tlog.yaml", []string{"fx/key-attest", "fx/key-tlog-bundle", "fx/key-tlog-legacy"}},
		{"native-keyless.yaml", []string{"fx/github-main", "fx/keyless-bundle", "fx/keyless-legacy"}},
		{"native-attest.yaml", []string{"fx/keyless-bundle", "fx/keyless-legacy"}},
	}
	for _, referrers := range []bool{true, false} {
		reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, referrers, nil)
		v := cosign.New(cosign.Options{Keychain: authn.NewMultiKeychain()})
		for _, c := range cases {
			store, err := NewStore(sigstorePolicy(t, c.policy), StoreOptions{TrustedRoot: filepath.Join(reg.Dir, "trusted_root.json")})
			if err != nil {
				t.Fatalf("%s: %v", c.policy, err)
			}
			e := NewEngine(store, v, EngineOptions{})
			for _, img := range sigstoreImages {
				d := e.Evaluate(context.Background(), Input{Operation: "PullImage", Image: reg.Ref(img, "1.0"), Namespace: "default"})
				want := slices.Contains(c.allow, img)
				if d.Allowed != want || d.Audited {
					t.Errorf("referrers=%v %s %s: allowed=%v audited=%v, want %v: %s", referrers, c.policy, img, d.Allowed, d.Audited, want, d.Reason)
				}
			}
		}
	}
}

// TestTrustedRootWiring: without --trusted-root the embedded public-good root
// is trusted, which does not know the fixtures' Rekor log, so the key policy
// denies; the fixture root allows; a broken root file on reload keeps the
// last good set and a new root makes a new generation.
func TestTrustedRootWiring(t *testing.T) {
	reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, false, nil)
	v := cosign.New(cosign.Options{Keychain: authn.NewMultiKeychain()})
	img := Input{Operation: "PullImage", Image: reg.Ref("fx/key-tlog-bundle", "1.0"), Namespace: "default"}

	pg, err := NewStore(sigstorePolicy(t, "verify-image.yaml"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := NewEngine(pg, v, EngineOptions{}).Evaluate(context.Background(), img); d.Allowed || !strings.Contains(d.Reason, "transparency") {
		t.Fatalf("public-good root: allowed=%v %s", d.Allowed, d.Reason)
	}

	rootFile := filepath.Join(t.TempDir(), "trusted_root.json")
	good, err := os.ReadFile(filepath.Join(reg.Dir, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	writeRoot := func(b []byte) {
		if err := os.WriteFile(rootFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeRoot(good)
	store, err := NewStore(sigstorePolicy(t, "verify-image.yaml"), StoreOptions{TrustedRoot: rootFile})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(store, v, EngineOptions{})
	if d := e.Evaluate(context.Background(), img); !d.Allowed {
		t.Fatalf("fixture root: %s", d.Reason)
	}
	gen := store.Current().Generation
	writeRoot([]byte(`{"mediaType":"nonsense"}`))
	if err := store.Reload(); err == nil || !strings.Contains(err.Error(), rootFile) {
		t.Fatalf("broken root reloaded: %v", err)
	}
	if store.Current().Generation != gen {
		t.Fatal("a refused root replaced the set")
	}
	if d := e.Evaluate(context.Background(), img); !d.Allowed {
		t.Fatalf("last good root lost: %s", d.Reason)
	}
	pgRoot, err := os.ReadFile(filepath.Join("..", "trust", "embedded", "public-good.json"))
	if err != nil {
		t.Fatal(err)
	}
	writeRoot(pgRoot)
	if err := store.Reload(); err != nil {
		t.Fatal(err)
	}
	if store.Current().Generation == gen {
		t.Fatal("a new root kept the generation (and its cached verdicts)")
	}
	if d := e.Evaluate(context.Background(), img); d.Allowed {
		t.Fatal("allowed under a root that does not trust the fixtures' log")
	}
}

// TestNativeKeyTlogDefault: an ImagePolicy key entry without transparencyLog
// means Ignore (the key alone, as ImagePolicy always meant): the unlogged
// fixture verifies; with Require it does not.
func TestNativeKeyTlogDefault(t *testing.T) {
	reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, false, nil)
	v := cosign.New(cosign.Options{Keychain: authn.NewMultiKeychain()})
	for _, c := range []struct {
		tlog    string
		allowed bool
	}{{"", true}, {"transparencyLog: Ignore", true}, {"transparencyLog: Require", false}} {
		pol := writeFile(t, t.TempDir(), "p.yaml", fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: k}
spec:
  rules:
  - name: t
    images: ["*"]
    attestors:
      entries:
      - key: {file: %s, %s}
`, reg.Key("t"), c.tlog))
		store, err := NewStore(pol, StoreOptions{TrustedRoot: filepath.Join(reg.Dir, "trusted_root.json")})
		if err != nil {
			t.Fatal(err)
		}
		d := NewEngine(store, v, EngineOptions{}).Evaluate(context.Background(), Input{Image: reg.Ref("fx/key-no-tlog", "1.0")})
		if d.Allowed != c.allowed {
			t.Errorf("%q: allowed=%v, want %v: %s", c.tlog, d.Allowed, c.allowed, d.Reason)
		}
	}
}
