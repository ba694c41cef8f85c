package sigverify

import (
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/trust"
)

// Keyless verification figures (issue 10 §8). "Cold" is what a node does for
// an image it has not judged before: read the trusted root, build the
// verifier, verify the material (already fetched: registry round trips are
// the caller's and are counted there).

func BenchmarkKeylessBundleCold(b *testing.B) {
	kb := loadImage(b, "fx/keyless-bundle")
	sig := signatureBundle(&testing.T{}, fixtureVerifier(b), kb, Signer{Identities: []Identity{alice}})
	benchCold(b, func(v *Verifier) error {
		_, err := v.VerifyBundle(sig, kb.digest, Signer{Identities: []Identity{alice}}, Options{})
		return err
	})
}

func BenchmarkKeylessLegacyCold(b *testing.B) {
	kl := loadImage(b, "fx/keyless-legacy")
	benchCold(b, func(v *Verifier) error {
		_, err := v.VerifyLegacySignature(kl.sigs[0], kl.digest, Signer{Identities: []Identity{alice}}, Options{})
		return err
	})
}

// benchCold times reading the trusted root, building the verifier and
// verify, each iteration.
func benchCold(b *testing.B, verify func(*Verifier) error) {
	path := filepath.Join(fixtureDir, "trusted_root.json")
	b.ResetTimer()
	for range b.N {
		tr, err := trust.LoadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		v, _ := New(tr)
		if err := verify(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKeylessBundleWarm(b *testing.B) {
	v := fixtureVerifier(b)
	kb := loadImage(b, "fx/keyless-bundle")
	sig := signatureBundle(&testing.T{}, v, kb, Signer{Identities: []Identity{alice}})
	b.ResetTimer()
	for range b.N {
		if _, err := v.VerifyBundle(sig, kb.digest, Signer{Identities: []Identity{alice}}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCosignVerifyKeyless is the wall time of the real cosign CLI
// (`make tools` builds it into $CRIGUARD_E2E_CACHE/bin) verifying the same
// keyless bundle offline from a loopback registry holding the fixtures.
func BenchmarkCosignVerifyKeyless(b *testing.B) {
	cache := os.Getenv("CRIGUARD_E2E_CACHE")
	if cache == "" {
		b.Fatal("CRIGUARD_E2E_CACHE is not set: run `make tools` and point it at the cache holding bin/cosign")
	}
	cosign := filepath.Join(cache, "bin", "cosign")
	if _, err := os.Stat(cosign); err != nil {
		b.Fatalf("cosign CLI: %v (run `make tools`)", err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	if _, err := fixtureregistry.Load(b.Context(), fixtureDir, srv.URL); err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse(srv.URL)
	home := b.TempDir()
	args := []string{"verify", "--trusted-root", filepath.Join(fixtureDir, "trusted_root.json"),
		"--certificate-identity", alice.Subject, "--certificate-oidc-issuer", alice.Issuer,
		"--allow-http-registry", u.Host + "/fx/keyless-bundle:1.0"}
	b.ResetTimer()
	for range b.N {
		cmd := exec.Command(cosign, args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("cosign %v: %v\n%s", args, err, out)
		}
	}
}
