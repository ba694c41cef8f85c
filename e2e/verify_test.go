//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/criguard/criguard/e2e/harness"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
)

// verifyKeys are the signing keys of the e2e verification tests, made by the
// real cosign CLI: an ECDSA P-256 pair (generate-key-pair) and an imported RSA
// 2048 pair (import-key-pair).
type verifyKeys struct {
	cs                 *harness.CosignCLI
	ecKey, ecPub       string
	rsaKey, rsaPub     string
	otherKey, otherPub string
}

func verifyMakeKeys(t *testing.T) *verifyKeys {
	t.Helper()
	cs := harness.Cosign(t)
	k := &verifyKeys{cs: cs}
	k.ecKey, k.ecPub = cs.GenerateKeyPair(t, harness.TempDir(t, "ec"))
	k.otherKey, k.otherPub = cs.GenerateKeyPair(t, harness.TempDir(t, "other"))
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	k.rsaKey, k.rsaPub = cs.ImportKeyPair(t, harness.TempDir(t, "rsa"), string(p))
	return k
}

func verifyLoadKey(t *testing.T, path string) *keys.Key {
	t.Helper()
	k, err := keys.LoadFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verifyOne runs the in-process verifier on ref with one key.
func verifyOne(t *testing.T, ref, pub string) cosign.Result {
	t.Helper()
	v := cosign.New(cosign.Options{})
	image, err := imageref.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.Verify(context.Background(), cosign.Request{Image: image, Keys: []*keys.Key{verifyLoadKey(t, pub)}})
	if err != nil {
		t.Fatalf("verify %s: %v", ref, err)
	}
	return res
}

// verifyAgree checks criguard's verdict against the real cosign CLI's.
func verifyAgree(t *testing.T, cs *harness.CosignCLI, ref, pub string, want bool, reason string) cosign.Result {
	t.Helper()
	res := verifyOne(t, ref, pub)
	_, cerr := cs.Verify(t, pub, ref)
	if (cerr == nil) != want {
		t.Fatalf("cosign verify %s with %s: err=%v, test expects pass=%v", ref, pub, cerr, want)
	}
	if res.Allowed != want {
		t.Fatalf("criguard on %s with %s: allowed=%v (%s), cosign pass=%v", ref, pub, res.Allowed, res.Reason, cerr == nil)
	}
	if !want && !strings.Contains(res.Reason, reason) {
		t.Fatalf("criguard on %s: reason %q lacks %q", ref, res.Reason, reason)
	}
	return res
}

// TestVerifyFreshSignatures signs fresh images with the real cosign CLI (bundle
// and legacy, ECDSA and RSA) into the harness registry, with and without the
// referrers API, and checks criguard and `cosign verify --insecure-ignore-tlog`
// agree: signed digests pass with their key only, a tag moved after signing
// and a signature copied from another image are denied.
func TestVerifyFreshSignatures(t *testing.T) {
	k := verifyMakeKeys(t)
	for _, referrers := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers=%v", referrers), func(t *testing.T) {
			r := harness.StartRegistry(t, referrers)
			for _, c := range []struct {
				name     string
				key, pub string
				legacy   bool
			}{
				{"ecdsa-bundle", k.ecKey, k.ecPub, false},
				{"ecdsa-legacy", k.ecKey, k.ecPub, true},
				{"rsa-bundle", k.rsaKey, k.rsaPub, false},
				{"rsa-legacy", k.rsaKey, k.rsaPub, true},
			} {
				t.Run(c.name, func(t *testing.T) {
					repo := "verify/" + c.name
					d := r.PushImage(t, repo, "v1")
					k.cs.Sign(t, c.key, r.Ref(repo, d), c.legacy)
					res := verifyAgree(t, k.cs, r.Ref(repo, "v1"), c.pub, true, "")
					format := "bundle"
					if c.legacy {
						format = "legacy"
					}
					if res.Digest != d || len(res.Verified) != 1 || res.Verified[0].Format != format {
						t.Fatalf("verdict %+v, want digest %s and one %s signature", res, d, format)
					}
					verifyAgree(t, k.cs, r.Ref(repo, "v1"), k.otherPub, false, "none verified by a trusted key")

					// The tag moves to an image nobody signed.
					moved := r.PushImage(t, repo, "v1")
					res = verifyAgree(t, k.cs, r.Ref(repo, "v1"), c.pub, false, "no cosign signatures found")
					if res.Digest != moved {
						t.Fatalf("judged %s, the tag names %s", res.Digest, moved)
					}
					// The signed digest itself still verifies.
					verifyAgree(t, k.cs, r.Ref(repo, d), c.pub, true, "")
				})
			}

			t.Run("copied-legacy-signature", func(t *testing.T) {
				signed := r.PushImage(t, "verify/copy-src", "v1")
				k.cs.Sign(t, k.ecKey, r.Ref("verify/copy-src", signed), true)
				victim := r.PushImage(t, "verify/copy-dst", "v1")
				mt, body := r.Manifest(t, r.Ref("verify/copy-src", verifyTag(signed)+".sig"))
				verifyPutManifest(t, r, "verify/copy-dst", verifyTag(victim)+".sig", mt, body)
				verifyAgree(t, k.cs, r.Ref("verify/copy-dst", "v1"), k.ecPub, false, "signature for another digest")
			})
			t.Run("copied-bundle", func(t *testing.T) {
				signed := r.PushImage(t, "verify/bcopy-src", "v1")
				k.cs.Sign(t, k.ecKey, r.Ref("verify/bcopy-src", signed), false)
				victim := r.PushImage(t, "verify/bcopy-dst", "v1")
				// The bundle's manifest, re-pointed at the victim (subject and fallback tag).
				var ixBody []byte
				if referrers {
					ixBody = verifyGet(t, "http://"+r.Host+"/v2/verify/bcopy-src/referrers/"+signed)
				} else {
					_, ixBody = r.Manifest(t, r.Ref("verify/bcopy-src", verifyTag(signed)))
				}
				var ix struct {
					Manifests []struct {
						Digest string `json:"digest"`
					} `json:"manifests"`
				}
				if err := json.Unmarshal(ixBody, &ix); err != nil || len(ix.Manifests) != 1 {
					t.Fatalf("referrers of the signed image: %s %v", ixBody, err)
				}
				mt, mb := r.Manifest(t, r.Ref("verify/bcopy-src", ix.Manifests[0].Digest))
				_, victimManifest := r.Manifest(t, r.Ref("verify/bcopy-dst", victim))
				var m map[string]any
				if err := json.Unmarshal(mb, &m); err != nil {
					t.Fatal(err)
				}
				subj := m["subject"].(map[string]any)
				subj["digest"], subj["size"] = victim, len(victimManifest)
				mb, _ = json.Marshal(m)
				md := verifyPutManifest(t, r, "verify/bcopy-dst", "", mt, mb)
				if !referrers {
					fallback, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
						"manifests": []map[string]any{{"mediaType": mt, "digest": md, "size": len(mb), "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}}})
					verifyPutManifest(t, r, "verify/bcopy-dst", verifyTag(victim), "application/vnd.oci.image.index.v1+json", fallback)
				}
				verifyAgree(t, k.cs, r.Ref("verify/bcopy-dst", "v1"), k.ecPub, false, "signature for another digest")
			})
		})
	}
}

// TestVerifyFixturesAgreeWithCosignCLI runs the real cosign CLI and criguard on
// every fixture image and key, served by the harness registry.
func TestVerifyFixturesAgreeWithCosignCLI(t *testing.T) {
	cs := harness.Cosign(t)
	for _, referrers := range []bool{true, false} {
		r := harness.StartRegistry(t, referrers)
		fx := r.LoadCosignFixtures(t)
		for repo := range fx.Tags {
			for _, kn := range []string{"a", "b", "rsa"} {
				ref := fx.Ref(repo, "1.0")
				res := verifyOne(t, ref, fx.Keys[kn])
				_, cerr := cs.Verify(t, fx.Keys[kn], ref)
				if res.Allowed != (cerr == nil) {
					t.Errorf("referrers=%v %s key %s: criguard allowed=%v (%s), cosign err=%v", referrers, repo, kn, res.Allowed, res.Reason, cerr)
				}
			}
		}
	}
}

// TestVerifyCommandBinary runs the criguard binary: exit 0 when every image is
// allowed, 1 when any is denied, 2 on usage or configuration errors.
func TestVerifyCommandBinary(t *testing.T) {
	k := verifyMakeKeys(t)
	r := harness.StartRegistry(t, true)
	d := r.PushImage(t, "verify/cli", "signed")
	k.cs.Sign(t, k.ecKey, r.Ref("verify/cli", d), false)
	r.PushImage(t, "verify/cli", "unsigned")
	signed, unsigned := r.Ref("verify/cli", "signed"), r.Ref("verify/cli", "unsigned")
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"verify", "--key", k.ecPub, signed}, 0, "image " + signed + " (digest " + d + ") allowed"},
		{[]string{"verify", "--key", k.ecPub, signed, unsigned}, 1, "no cosign signatures found"},
		{[]string{"verify", "--key", k.rsaPub, signed}, 1, "none verified by a trusted key"},
		{[]string{"verify", "--key", k.ecPub, "--output", "json", signed}, 0, `"allowed": true`},
		{[]string{"verify", "--key", k.ecPub, "--timeout", "2s", "127.0.0.1:1/nothing/here:1"}, 1, "could not verify"},
		{[]string{"verify", signed}, 2, ""},
		{[]string{"verify", "--key", k.ecKey, signed}, 2, ""}, // a private key is not a public key
		{[]string{"verify", "--key", k.ecPub}, 2, ""},
	} {
		stdout, stderr, code := harness.RunCriguard(t, c.args...)
		if code != c.code || !strings.Contains(stdout, c.out) {
			t.Errorf("criguard %s: exit %d (want %d)\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, c.code, stdout, stderr)
		}
	}
}

// verifyTag is the referrers fallback tag of digest: sha256-<hex>.
func verifyTag(digest string) string { return strings.Replace(digest, ":", "-", 1) }

func verifyGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return b.Bytes()
}

// verifyPutManifest stores body under ref (a tag, or "" for its digest) and
// returns its digest.
func verifyPutManifest(t *testing.T, r *harness.Registry, repo, ref, mediaType string, body []byte) string {
	t.Helper()
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(body))
	if ref == "" {
		ref = d
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+r.Host+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s/%s: %s", repo, ref, resp.Status)
	}
	return d
}
