package sigverify

import (
	"fmt"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/criguard/criguard/verifier/sigformat"
)

// VerifyBundle verifies a Sigstore bundle (v0.3 or later, DSSE, as cosign v3
// attaches to an image) for digest ("sha256:<hex>"): its in-toto statement must
// name digest as a subject, the signature must be s's, and unless o relaxes
// it, a transparency-log entry recording this envelope must verify against the
// trusted logs. The result's PredicateType tells an image signature
// (sigformat.CosignSignPredicate) from an attestation.
func (v *Verifier) VerifyBundle(bundleJSON []byte, digest string, s Signer, o Options) (*Result, error) {
	want, err := digestBytes(digest)
	if err != nil {
		return nil, err
	}
	if len(bundleJSON) > MaxBundleSize {
		return nil, fmt.Errorf("the bundle is %d bytes, larger than the %d-byte limit", len(bundleJSON), MaxBundleSize)
	}
	var b *bundle.Bundle
	if err := guard("the bundle", func() (err error) { b, err = sigformat.ParseBundle(bundleJSON); return err }); err != nil {
		return nil, err
	}
	env := b.GetDsseEnvelope()
	if len(env.GetPayload()) > MaxEnvelopeSize {
		return nil, fmt.Errorf("the bundle's statement is %d bytes, larger than the %d-byte limit", len(env.GetPayload()), MaxEnvelopeSize)
	}
	st, err := parseStatement(env.GetPayloadType(), env.GetPayload(), digest)
	if err != nil {
		return nil, err
	}
	bind := func() error {
		if o.IgnoreTlog {
			return nil
		}
		entries, err := b.TlogEntries()
		if err != nil {
			return fmt.Errorf("the bundle's transparency-log entries are unreadable: %w", err)
		}
		return bindEntries(entries, env.GetPayload())
	}
	res, err := v.run(b, s, o, verify.WithArtifactDigest(sha256Algorithm, want), bind)
	if err != nil {
		return nil, err
	}
	r := result(formatBundle, s, res)
	r.PredicateType, r.Predicate = st.PredicateType, st.predicate
	return r, nil
}
