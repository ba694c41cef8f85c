package policy

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/criguard/criguard/internal/testkey"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
)

// testKey is a generated ECDSA P-256 public key in PEM.
func testKey(t testing.TB) string {
	t.Helper()
	_, pemData := testkey.New(t)
	return string(pemData)
}

// indent prefixes every line of s with n spaces (for PEM inside YAML).
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return pad + strings.Join(lines, "\n"+pad)
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadString loads one YAML text from a temp file.
func loadString(t testing.TB, yamlText string) (*Set, error) {
	t.Helper()
	dir := t.TempDir()
	return Load(writeFile(t, dir, "policy.yaml", yamlText))
}

func mustLoad(t testing.TB, yamlText string) *Set {
	t.Helper()
	s, err := loadString(t, yamlText)
	if err != nil {
		t.Fatalf("load: %v\n%s", err, yamlText)
	}
	return s
}

// fakeVerifier answers from tables. A signature is identified by the PEM of
// the key that made it, so keys with different names but the same material
// (native file vs Kyverno inline) verify the same signatures, as in reality.
type fakeVerifier struct {
	mu           sync.Mutex
	tags         map[string]string          // normalized tag reference -> digest
	signed       map[string]map[string]bool // "repo@digest" -> key fingerprints that signed it
	incomplete   map[string]bool            // digest -> Verify fails with ErrIncomplete (network error)
	serverError  map[string]bool            // digest -> Verify fails with ErrIncomplete (5xx)
	private      map[string]string          // digest -> the only username the registry lets read it (else 401)
	panics       map[string]bool            // digest -> Verify panics (a library choking on hostile input)
	resolveErr   error
	answerDigest string        // when set, Verify answers for this digest (a confused verifier)
	gate         chan struct{} // when set, Verify waits for it to close
	slowHost     string        // when set, only Verify calls for this registry wait for gate
	entered      chan struct{} // when set, Verify signals each call
	verifies     atomic.Int32
	resolves     atomic.Int32
	requests     []cosign.Request
}

func newFake() *fakeVerifier {
	return &fakeVerifier{tags: map[string]string{}, signed: map[string]map[string]bool{}, incomplete: map[string]bool{}, serverError: map[string]bool{}, private: map[string]string{}, panics: map[string]bool{}}
}

func fingerprint(t testing.TB, pemText string) string {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		t.Fatal("bad pem")
	}
	return fmt.Sprintf("%x", blk.Bytes)
}

func (f *fakeVerifier) sign(repoAtDigest string, fps ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signed[repoAtDigest] == nil {
		f.signed[repoAtDigest] = map[string]bool{}
	}
	for _, fp := range fps {
		f.signed[repoAtDigest][fp] = true
	}
}

func (f *fakeVerifier) Resolve(ctx context.Context, ref imageref.Ref, _ *cosign.Auth) (string, error) {
	f.resolves.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resolveErr != nil {
		return "", f.resolveErr
	}
	dg, ok := f.tags[ref.String()]
	if !ok {
		return "", fmt.Errorf("MANIFEST_UNKNOWN: %s not found", ref)
	}
	return dg, nil
}

func (f *fakeVerifier) Verify(ctx context.Context, req cosign.Request) (cosign.Result, error) {
	f.verifies.Add(1)
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil && (f.slowHost == "" || req.Image.Registry() == f.slowHost) {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return cosign.Result{}, fmt.Errorf("%w: %w", cosign.ErrIncomplete, ctx.Err())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if f.panics[req.Digest] {
		panic("hostile input")
	}
	if f.incomplete[req.Digest] {
		return cosign.Result{}, fmt.Errorf("%w: registry unreachable: %w", cosign.ErrIncomplete, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	}
	if f.serverError[req.Digest] {
		return cosign.Result{}, fmt.Errorf("%w: registry answered 503 Service Unavailable", cosign.ErrIncomplete)
	}
	if user, ok := f.private[req.Digest]; ok && (req.Auth == nil || req.Auth.Username != user) {
		return cosign.Result{}, fmt.Errorf("%w: registry answered 401 Unauthorized", cosign.ErrIncomplete)
	}
	repo := req.Image.Repository()
	if req.SignatureRepository != "" {
		repo = req.SignatureRepository
	}
	sigs := f.signed[repo+"@"+req.Digest]
	// Signers are counted as the real verifier counts them (cosign.Needed,
	// cosign.Signers): by key material, not per entry.
	need, short := cosign.Needed(req.Attestors, req.Threshold)
	res := cosign.Result{Image: req.Image.String(), Digest: req.Digest, Reason: short}
	if short != "" {
		return res, nil
	}
	var signed []cosign.Attestor
	for _, a := range req.Attestors {
		k := a.Key
		if k == nil {
			return cosign.Result{}, fmt.Errorf("the test double verifies keys only")
		}
		pub, err := k.PublicKey()
		if err != nil {
			return cosign.Result{}, err
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		if sigs[fmt.Sprintf("%x", der)] {
			signed = append(signed, a)
			res.Verified = append(res.Verified, cosign.Signature{Key: k.Name, Format: "legacy", Digest: "sha256:" + strings.Repeat("e", 64)})
		}
	}
	res.Allowed = cosign.Signers(signed) >= need
	if f.answerDigest != "" {
		res.Digest = f.answerDigest
	}
	if !res.Allowed {
		res.Verified = nil
		if len(sigs) == 0 {
			res.Reason = "no signatures found"
		} else {
			res.Reason = fmt.Sprintf("%d of %d required keys verified a signature", cosign.Signers(signed), need)
		}
	}
	return res, nil
}

// kyvernoEnforce is an Enforce ClusterPolicy verifying ghcr.io/* with key A;
// MATCH and EXCLUDE are replaced.
const kyvernoEnforce = `apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: k}
spec:
  validationFailureAction: Enforce
  rules:
  - name: r
    match: MATCH
    exclude: EXCLUDE
    verifyImages:
    - imageReferences: ["ghcr.io/*"]
      attestors:
      - entries:
        - keys: {publicKeys: KEYA, rekor: {ignoreTlog: true}}
`

// enforceDoc is kyvernoEnforce with its match and exclude ("": none).
func enforceDoc(match, exclude string) string {
	doc := strings.Replace(kyvernoEnforce, "MATCH", match, 1)
	if exclude == "" {
		return strings.Replace(doc, "    exclude: EXCLUDE\n", "", 1)
	}
	return strings.Replace(doc, "EXCLUDE", exclude, 1)
}

func digestOf(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }
