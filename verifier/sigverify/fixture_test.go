package sigverify

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/sigformat"
	"github.com/criguard/criguard/verifier/trust"
)

// fixtureDir is the Sigstore fixture dump (testdata/sigstore): images signed
// offline by a real Fulcio, Rekor, TSA and CT log with the real cosign CLI.
var fixtureDir = filepath.Join("..", "..", "testdata", "sigstore")

// material is what a registry holds for one image: legacy .sig and .att
// layers, and bundles under the referrers fallback tag.
type material struct {
	digest  string
	sigs    []Legacy
	atts    []Legacy
	bundles [][]byte
}

// loadImage reads repo:1.0's signature material straight from the dump's
// files (the registry path is the verifier's and is tested there).
func loadImage(t testing.TB, repo string) material {
	t.Helper()
	var tags map[string]map[string]string
	readJSON(t, filepath.Join(fixtureDir, "registry", "tags.json"), &tags)
	m := material{digest: tags[repo]["1.0"]}
	if m.digest == "" {
		t.Fatalf("%s:1.0 is not in the fixture dump", repo)
	}
	base := "sha256-" + strings.TrimPrefix(m.digest, "sha256:")
	for tag, dst := range map[string]*[]Legacy{base + ".sig": &m.sigs, base + ".att": &m.atts} {
		if d, ok := tags[repo][tag]; ok {
			for _, l := range manifest(t, repo, d).Layers {
				*dst = append(*dst, Legacy{Payload: blob(t, l.Digest), Annotations: l.Annotations})
			}
		}
	}
	if d, ok := tags[repo][base]; ok {
		var ix sigformat.Index
		readJSON(t, manifestPath(repo, d), &ix)
		for _, r := range ix.Manifests {
			for _, l := range manifest(t, repo, r.Digest).Layers {
				if strings.HasPrefix(l.MediaType, sigformat.BundleMediaTypePrefix) {
					m.bundles = append(m.bundles, blob(t, l.Digest))
				}
			}
		}
	}
	return m
}

func manifestPath(repo, digest string) string {
	return filepath.Join(fixtureDir, "registry", "repos", repo, "manifests", strings.Replace(digest, ":", "-", 1))
}

func manifest(t testing.TB, repo, digest string) *sigformat.Manifest {
	t.Helper()
	b, err := os.ReadFile(manifestPath(repo, digest))
	if err != nil {
		t.Fatal(err)
	}
	m, err := sigformat.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func blob(t testing.TB, digest string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, "registry", "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func fixtureVerifier(t testing.TB) *Verifier {
	t.Helper()
	tr, err := trust.LoadFile(filepath.Join(fixtureDir, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	return verifierFor(t, tr)
}

// verifierFor is New(tm) or the test's end.
func verifierFor(t testing.TB, tm root.TrustedMaterial) *Verifier {
	t.Helper()
	v, err := New(tm)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// verifyCase is one verification and the denial it must give.
type verifyCase struct {
	name   string
	verify func() (*Result, error)
	want   string // in the denial; "" means it must pass
}

// runVerifyCases runs each case as a subtest: an allowed case must verify, a
// denied one must fail saying want (logged, to read the messages).
func runVerifyCases(t *testing.T, cases []verifyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := c.verify()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("denied: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("allowed (%+v), want a denial containing %q", r, c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("denial %q\ndoes not say %q", err, c.want)
			}
			if err != nil {
				t.Log(err)
			}
		})
	}
}

func keyT(t testing.TB) *keys.Key {
	t.Helper()
	k, err := keys.LoadFile(filepath.Join(fixtureDir, "keys", "t.pub"), "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The identities of verdicts.md's columns.
var (
	alice  = Identity{Subject: "alice@example.com", Issuer: "http://127.0.0.1:8080"}
	github = Identity{SubjectRegExp: "^https://github.com/example/app/", Issuer: "http://localhost:8080"}
)

func init() { github.Extensions.GithubWorkflowRef = "refs/heads/main" }

// Predicate type URIs of cosign's --type names used by verdicts.md.
const (
	slsaProvenance1 = "https://slsa.dev/provenance/v1"
	vulnPredicate   = "https://cosign.sigstore.dev/attestation/vuln/v1"
)

// verifySignatures is `cosign verify`: any image signature verifies.
func verifySignatures(v *Verifier, m material, s Signer, o Options) (*Result, []error) {
	var errs []error
	for _, l := range m.sigs {
		r, err := v.VerifyLegacySignature(l, m.digest, s, o)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	for _, b := range m.bundles {
		r, err := v.VerifyBundle(b, m.digest, s, o)
		if err == nil && r.IsImageSignature() {
			return r, nil
		}
		errs = append(errs, err)
	}
	return nil, errs
}

// verifyAttestations is `cosign verify-attestation --type T`: any attestation
// of predicate type T verifies.
func verifyAttestations(v *Verifier, m material, predicateType string, s Signer, o Options) (*Result, []error) {
	var errs []error
	try := func(r *Result, err error) *Result {
		if err == nil && r.PredicateType == predicateType {
			return r
		}
		errs = append(errs, err)
		return nil
	}
	for _, l := range m.atts {
		if r := try(v.VerifyLegacyAttestation(l, m.digest, s, o)); r != nil {
			return r, nil
		}
	}
	for _, b := range m.bundles {
		if r := try(v.VerifyBundle(b, m.digest, s, o)); r != nil {
			return r, nil
		}
	}
	return nil, errs
}
