package cosign

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/registry"
	"github.com/criguard/criguard/verifier/sigformat"
)

// listBundles finds the referrers of the digest that may be Sigstore bundles:
// through the referrers API, or its sha256-<hex> fallback tag.
func (j *judgement) listBundles(ctx context.Context) ([]sigformat.Descriptor, error) {
	b, supported, err := j.repo.Referrers(ctx, j.digest, MaxContentSize)
	where := "referrers tag " + registry.FallbackTag(j.digest)
	if supported {
		where = "referrers API"
	}
	if err != nil {
		p, ierr := fetchErr(ctx, "listing referrers", err)
		if ierr != nil {
			return nil, ierr
		}
		j.note(where + ": " + p)
		return nil, nil
	}
	if b == nil {
		j.note("referrers API unsupported, " + where + ": not found")
		return nil, nil
	}
	ix, err := sigformat.ParseIndex(b)
	if err != nil {
		j.note(where + ": unreadable: " + err.Error())
		return nil, nil
	}
	// Pick candidates by artifactType where it says "bundle", or says nothing
	// useful (some registries report the config media type); the layer media
	// type decides once the manifest is read.
	var out []sigformat.Descriptor
	seen := map[string]bool{}
	for _, d := range ix.Manifests {
		at := d.ArtifactType
		if !(strings.HasPrefix(at, sigformat.BundleMediaTypePrefix) || at == "" || at == sigformat.EmptyConfigMediaType) || seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		out = append(out, d)
	}
	j.note(fmt.Sprintf("%s: %d referrer(s), %d possible Sigstore bundle(s)", where, len(ix.Manifests), len(out)))
	return out, nil
}

// legacyManifest reads the sha256-<hex>.sig manifest, or nil when there is none.
func (j *judgement) legacyManifest(ctx context.Context) (*sigformat.Manifest, string, error) {
	tag := registry.SignatureTag(j.digest)
	b, d, err := j.repo.Manifest(ctx, tag, MaxContentSize)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			j.note("tag " + tag + ": not found")
			return nil, "", nil
		}
		p, ierr := fetchErr(ctx, "reading "+tag, err)
		if ierr != nil {
			return nil, "", ierr
		}
		j.add(finding{format: "legacy", digest: tag, problem: p, container: true})
		j.note("tag " + tag + ": unreadable")
		return nil, "", nil
	}
	m, err := sigformat.ParseManifest(b)
	if err != nil {
		j.add(finding{format: "legacy", digest: d.Digest, problem: "signature manifest " + tag + " is malformed: " + err.Error(), container: true})
		j.note("tag " + tag + ": malformed")
		return nil, "", nil
	}
	j.note(fmt.Sprintf("tag %s: %d signature layer(s)", tag, len(m.Layers)))
	return m, d.Digest, nil
}

// checkLegacy verifies one simple-signing layer: the signature over the exact
// payload bytes with each key, then the payload's docker-manifest-digest.
func (j *judgement) checkLegacy(ctx context.Context, _ string, l sigformat.Descriptor) error {
	f := finding{format: "legacy", digest: l.Digest}
	sig, err := sigformat.DecodeSignature(l.Annotations[sigformat.SignatureAnnotation])
	if err != nil {
		f.problem = err.Error()
		j.add(f)
		return nil
	}
	payload, err := j.repo.Blob(ctx, l.Digest, l.Size, MaxContentSize)
	if err != nil {
		p, ierr := fetchErr(ctx, "signature payload", err)
		if ierr != nil {
			return ierr
		}
		f.problem = p
		j.add(f)
		return nil
	}
	ss, perr := sigformat.ParseSimpleSigning(payload)
	for i, k := range j.keys {
		if k.Verify(sig, payload) != nil {
			continue
		}
		switch {
		case perr != nil:
			f.problem = fmt.Sprintf("signed by %s but %v", k.Name, perr)
		case ss.Critical.Image.DockerManifestDigest != j.digest:
			f.otherFor, f.otherKey = ss.Critical.Image.DockerManifestDigest, i
		default:
			f.keys = append(f.keys, i)
		}
	}
	if len(f.keys) > 0 {
		f.otherFor, f.problem = "", ""
	} else if f.problem == "" && f.otherFor == "" && perr != nil {
		f.problem = perr.Error()
	}
	j.add(f)
	return nil
}

// checkBundle reads one referrer manifest and its bundle layer and verifies the
// bundle with each key as cosign does (key only, no transparency log), requiring
// the in-toto subject to be the judged digest.
func (j *judgement) checkBundle(ctx context.Context, d sigformat.Descriptor) error {
	f := finding{format: "bundle", digest: d.Digest}
	fail := func(what string, err error) error {
		p, ierr := fetchErr(ctx, what, err)
		if ierr != nil {
			return ierr
		}
		f.problem = p
		j.add(f)
		return nil
	}
	if d.Size > MaxContentSize {
		return fail("referrer manifest", fmt.Errorf("%d bytes: %w (%d)", d.Size, registry.ErrTooLarge, MaxContentSize))
	}
	mb, _, err := j.repo.Manifest(ctx, d.Digest, MaxContentSize)
	if err != nil {
		return fail("referrer manifest", err)
	}
	m, err := sigformat.ParseManifest(mb)
	if err != nil {
		f.problem = err.Error()
		j.add(f)
		return nil
	}
	var layer *sigformat.Descriptor
	for i := range m.Layers {
		if strings.HasPrefix(m.Layers[i].MediaType, sigformat.BundleMediaTypePrefix) {
			layer = &m.Layers[i]
		}
	}
	if layer == nil {
		return nil // another kind of referrer (SBOM, ...): not a signature
	}
	if len(m.Layers) != 1 {
		f.problem = fmt.Sprintf("bundle manifest has %d layers, cosign writes exactly one", len(m.Layers))
		j.add(f)
		return nil
	}
	blob, err := j.repo.Blob(ctx, layer.Digest, layer.Size, MaxContentSize)
	if err != nil {
		return fail("bundle", err)
	}
	bn, err := sigformat.ParseBundle(blob)
	if err != nil {
		f.problem = err.Error()
		j.add(f)
		return nil
	}
	env := bn.GetDsseEnvelope()
	st, err := sigformat.ParseStatement(env.GetPayloadType(), env.GetPayload())
	if err != nil {
		f.problem = err.Error()
		j.add(f)
		return nil
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(j.digest, "sha256:"))
	for i, k := range j.keys {
		switch {
		case !st.HasSubject(j.digest):
			if verifyBundle(bn, k, nil) == nil {
				f.otherFor, f.otherKey = strings.Join(st.SubjectDigests(), ", "), i
			}
		case st.PredicateType != sigformat.CosignSignPredicate:
			if verifyBundle(bn, k, want) == nil {
				f.attest, f.otherKey = fmt.Sprintf("is an attestation of type %q, not an image signature", st.PredicateType), i
			}
		default:
			if verifyBundle(bn, k, want) == nil {
				f.keys = append(f.keys, i)
			}
		}
	}
	j.add(f)
	return nil
}

// verifyBundle verifies b with key k, as `cosign verify --key K
// --insecure-ignore-tlog` does: the key is the only trust material, no
// transparency log or timestamps are required. digest nil checks only the
// signature (to explain a denial), never to allow.
func verifyBundle(b *bundle.Bundle, k *keys.Key, digest []byte) error {
	expiring := root.NewExpiringKey(keyVerifier{k}, time.Time{}, time.Time{})
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return expiring, nil })
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		return err
	}
	artifact := verify.WithoutArtifactUnsafe()
	if digest != nil {
		artifact = verify.WithArtifactDigest("sha256", digest)
	}
	_, err = v.Verify(b, verify.NewPolicy(artifact, verify.WithKey()))
	return err
}

// keyVerifier adapts a keys.Key to sigstore's signature.Verifier, so bundle
// verification uses the same key and algorithm as legacy verification.
type keyVerifier struct{ k *keys.Key }

func (kv keyVerifier) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return kv.k.PublicKey()
}

func (kv keyVerifier) VerifySignature(sig, msg io.Reader, _ ...signature.VerifyOption) error {
	s, err := io.ReadAll(io.LimitReader(sig, sigformat.MaxSignatureSize+1))
	if err != nil {
		return err
	}
	if len(s) > sigformat.MaxSignatureSize {
		return errors.New("signature too large")
	}
	m, err := io.ReadAll(io.LimitReader(msg, MaxContentSize+1))
	if err != nil {
		return err
	}
	if len(m) > MaxContentSize {
		return errors.New("signed message too large")
	}
	return kv.k.Verify(s, m)
}

var _ signature.Verifier = keyVerifier{}
