package cosign

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/criguard/criguard/verifier/registry"
	"github.com/criguard/criguard/verifier/sigformat"
	"github.com/criguard/criguard/verifier/sigverify"
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
		// cosign v3 labels each bundle with its predicate type, and the
		// referrers API repeats the label: a bundle labelled as something
		// else than what is judged is not read (the label is a hint that can
		// only make less material be read, never an allow).
		if pt, ok := d.Annotations[bundlePredicateAnnotation]; ok && pt != j.wantPredicate() {
			continue
		}
		seen[d.Digest] = true
		out = append(out, d)
	}
	j.note(fmt.Sprintf("%s: %d referrer(s), %d possible Sigstore bundle(s)", where, len(ix.Manifests), len(out)))
	return out, nil
}

// bundlePredicateAnnotation is cosign v3's label of a bundle's predicate type
// on its referrer manifest.
const bundlePredicateAnnotation = "dev.sigstore.bundle.predicateType"

// wantPredicate is the predicate type of what is judged: an attestation's, or
// cosign's image-signature predicate.
func (j *judgement) wantPredicate() string {
	if j.want != nil {
		return j.want.PredicateType
	}
	return sigformat.CosignSignPredicate
}

// legacyTag is where cosign's legacy format keeps what this judgement looks
// for: sha256-<hex>.sig for signatures, .att for attestations.
func (j *judgement) legacyTag() string {
	if j.want != nil {
		return registry.FallbackTag(j.digest) + ".att"
	}
	return registry.SignatureTag(j.digest)
}

// legacyManifest reads the legacy .sig (or .att) manifest, or nil when there
// is none.
func (j *judgement) legacyManifest(ctx context.Context) (*sigformat.Manifest, string, error) {
	tag := j.legacyTag()
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
		j.add(finding{format: j.legacyFormat(), digest: tag, problem: p, container: true})
		j.note("tag " + tag + ": unreadable")
		return nil, "", nil
	}
	m, err := sigformat.ParseManifest(b)
	if err != nil {
		j.add(finding{format: j.legacyFormat(), digest: d.Digest, problem: "signature manifest " + tag + " is malformed: " + err.Error(), container: true})
		j.note("tag " + tag + ": malformed")
		return nil, "", nil
	}
	j.note(fmt.Sprintf("tag %s: %d layer(s)", tag, len(m.Layers)))
	return m, d.Digest, nil
}

func (j *judgement) legacyFormat() string {
	if j.want != nil {
		return "legacy attestation"
	}
	return "legacy"
}

// checkLegacy reads one legacy layer (a simple-signing payload, or an
// attestation's DSSE envelope) and verifies it with every attestor.
func (j *judgement) checkLegacy(ctx context.Context, l sigformat.Descriptor) error {
	f := finding{format: j.legacyFormat(), digest: l.Digest}
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
	lg := sigverify.Legacy{Payload: payload, Annotations: l.Annotations}
	j.verifyAll(&f, func(sv *sigverify.Verifier, s sigverify.Signer, o sigverify.Options) (*sigverify.Result, error) {
		if j.want != nil {
			return sv.VerifyLegacyAttestation(lg, j.digest, s, o)
		}
		return sv.VerifyLegacySignature(lg, j.digest, s, o)
	})
	j.add(f)
	return nil
}

// checkBundle reads one referrer manifest and its bundle layer and verifies
// the bundle with every attestor.
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
	j.verifyAll(&f, func(sv *sigverify.Verifier, s sigverify.Signer, o sigverify.Options) (*sigverify.Result, error) {
		return sv.VerifyBundle(blob, j.digest, s, o)
	})
	j.add(f)
	return nil
}

// verifyAll verifies one piece of material with each attestor and records
// what each found: a signer, an attestation whose predicate does (not) meet
// the conditions, or why it did not verify.
func (j *judgement) verifyAll(f *finding, verify func(*sigverify.Verifier, sigverify.Signer, sigverify.Options) (*sigverify.Result, error)) {
	f.errs = make([]error, len(j.attestors))
	for i, a := range j.attestors {
		sv := j.verifiers[i]
		if sv == nil {
			f.errs[i] = j.trustErrs[i]
			continue
		}
		res, err := verify(sv, sigverify.Signer{Key: a.Key, Identities: a.Identities}, sigverify.Options{IgnoreTlog: a.IgnoreTlog, IgnoreSCT: a.IgnoreSCT})
		switch {
		case err != nil:
			f.errs[i] = err
		case j.want == nil && !res.IsImageSignature():
			f.errs[i] = &kindError{fmt.Sprintf("is by %s but is an attestation of type %q, not an image signature", res.Signer, res.PredicateType)}
		case j.want == nil:
			f.hits = append(f.hits, hit{attestor: i, signer: res.Signer, signerID: provenSigner(a, res)})
		case res.IsImageSignature():
			f.errs[i] = &kindError{fmt.Sprintf("is an image signature by %s, not an attestation", res.Signer)}
		case res.PredicateType != j.want.PredicateType:
			f.errs[i] = &kindError{fmt.Sprintf("is an attestation by %s of type %q, not %q", res.Signer, res.PredicateType, j.want.PredicateType)}
		default:
			h := hit{attestor: i, signer: res.Signer, signerID: provenSigner(a, res), predicateType: res.PredicateType}
			if j.want.Conditions != nil {
				if cerr := j.want.Conditions.Evaluate(res.Predicate); cerr != nil {
					h.conditions = fmt.Errorf("attestation of type %s by %s does not meet the policy's conditions: %w", res.PredicateType, res.Signer, cerr)
				}
			}
			f.hits = append(f.hits, h)
		}
	}
}

// kindError: the material verified, but is not what was asked for (an
// attestation instead of a signature, another predicate type).
type kindError struct{ msg string }

func (e *kindError) Error() string { return e.msg }
