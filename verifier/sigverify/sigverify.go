// Package sigverify verifies Sigstore signature material that has already been
// fetched from a registry — a Sigstore bundle, a legacy cosign `.sig` layer or
// a legacy `.att` layer — for one image digest, under one signer requirement
// (a public key, or keyless identities), against Sigstore trust material
// (verifier/trust). Every cryptographic check is sigstore-go's verify package:
// transparency-log SETs and inclusion proofs, RFC 3161 timestamps, Fulcio
// certificate chains at the proven signing time, embedded SCTs, identities and
// signatures. This package adds what sigstore-go leaves to its caller: the
// in-toto subject and simple-signing digest must be the judged digest, a
// transparency-log entry must record this very payload, sizes are bounded, and
// every denial is a sentence that names its reason.
package sigverify

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/sigformat"
)

// Limits on the material verified here. Registry reads are bounded before
// (verifier.MaxContentSize); these bound what is parsed out of them.
const (
	// MaxBundleSize bounds a bundle's JSON.
	MaxBundleSize = 1 << 20
	// MaxEnvelopeSize bounds a legacy .att DSSE envelope, and so the in-toto
	// statement of an attestation.
	MaxEnvelopeSize = 1 << 20
	// MaxPayloadSize bounds a legacy simple-signing payload.
	MaxPayloadSize = 64 << 10
	// MaxAnnotationSize bounds one legacy annotation (certificate, chain, SET
	// bundle, timestamp): each is a few KiB.
	MaxAnnotationSize = 64 << 10
	// MaxChainCerts bounds the certificates of one signing certificate chain;
	// Fulcio's are 2 or 3.
	MaxChainCerts = 10
)

// Identity is one acceptable keyless signer, as cosign's
// --certificate-identity[-regexp], --certificate-oidc-issuer[-regexp] and
// --certificate-github-workflow-* flags, Kyverno's keyless attestor and
// policy-controller's keyless.identities express it. Exactly one of Subject
// and SubjectRegExp, and one of Issuer and IssuerRegExp, are set; regular
// expressions are Go syntax, unanchored, as in cosign. Non-empty Extensions
// fields must equal the certificate's.
type Identity struct {
	Subject, SubjectRegExp string
	Issuer, IssuerRegExp   string
	Extensions             certificate.Extensions
}

// Signer is who must have signed: a public key, or (keyless) a certificate
// from a trusted Fulcio CA for any one of Identities.
type Signer struct {
	Key        *keys.Key
	Identities []Identity
}

// Options relax what is required, as cosign's --insecure-ignore-tlog and
// --insecure-ignore-sct and Kyverno's rekor.ignoreTlog and ctlog.ignoreSCT do.
type Options struct {
	// IgnoreTlog: no transparency-log entry is required (entries present are
	// not consulted). Keyless signatures then need an RFC 3161 timestamp to
	// prove when the short-lived certificate was used.
	IgnoreTlog bool
	// IgnoreSCT: a keyless certificate's embedded SCT is not checked.
	IgnoreSCT bool
}

// Verifier verifies signature material against one set of trust material. It
// holds no mutable state and is safe for concurrent use.
type Verifier struct {
	trust root.TrustedMaterial
}

// New returns a Verifier trusting tm (a trusted root, with overrides applied).
func New(tm root.TrustedMaterial) (*Verifier, error) {
	if tm == nil {
		return nil, errors.New("sigverify: no trust material")
	}
	return &Verifier{trust: tm}, nil
}

// Result is what a successful verification proved.
type Result struct {
	// Format is "bundle", "legacy signature" or "legacy attestation".
	Format string
	// Signer describes who signed: "key NAME" or "SAN (issuer ISSUER)".
	Signer string
	// Certificate summarizes the keyless signing certificate (nil for keys).
	Certificate *certificate.Summary
	// Timestamps are the verified times the signature is proven to exist at
	// (transparency-log integrated times, RFC 3161 timestamps).
	Timestamps []Timestamp
	// PredicateType and Predicate are the in-toto statement's, for bundles and
	// legacy attestations; empty for a legacy signature.
	PredicateType string
	Predicate     []byte
}

// Timestamp is one verified signing time and who vouches for it.
type Timestamp struct {
	Source string // "transparency log" or "timestamp authority"
	URI    string
	Time   time.Time
}

// IsImageSignature reports whether the result is an image signature (a legacy
// signature, or a bundle whose predicate is cosign's sign predicate) rather
// than an attestation.
func (r *Result) IsImageSignature() bool {
	return r.Format == formatLegacySig || r.PredicateType == sigformat.CosignSignPredicate
}

const (
	formatBundle     = "bundle"
	formatLegacySig  = "legacy signature"
	formatLegacyAtt  = "legacy attestation"
	keyHint          = "criguard-policy-key"
	sha256Algorithm  = "sha256"
	inTotoStatement1 = "https://in-toto.io/Statement/v1"
)

// run verifies entity with sigstore-go under s and o; artifact says what the
// signature must cover; bind, run before the cryptography, checks what
// sigstore-go does not (that log entries record this payload).
func (v *Verifier) run(entity verify.SignedEntity, s Signer, o Options, artifact verify.ArtifactPolicyOption, bind func() error) (*verify.VerificationResult, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := preflight(entity, s); err != nil {
		return nil, err
	}
	if err := bind(); err != nil {
		return nil, err
	}
	tm := v.trust
	var vopts []verify.VerifierOption
	var popts []verify.PolicyOption
	if s.Key != nil {
		km := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
			return root.NewExpiringKey(keyVerifier{s.Key}, time.Time{}, time.Time{}), nil
		})
		tm = root.TrustedMaterialCollection{v.trust, km}
		if !o.IgnoreTlog {
			vopts = append(vopts, verify.WithTransparencyLog(1))
		}
		vopts = append(vopts, verify.WithNoObserverTimestamps())
		popts = append(popts, verify.WithKey())
	} else {
		if o.IgnoreTlog {
			vopts = append(vopts, verify.WithSignedTimestamps(1))
		} else {
			vopts = append(vopts, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
		}
		if !o.IgnoreSCT {
			vopts = append(vopts, verify.WithSignedCertificateTimestamps(1))
		}
		ids, err := s.certificateIdentities()
		if err != nil {
			return nil, err
		}
		popts = append(popts, verify.WithCertificateIdentity(ids[0]))
		for _, id := range ids[1:] {
			popts = append(popts, verify.WithCertificateIdentity(id))
		}
	}
	sv, err := verify.NewVerifier(tm, vopts...)
	if err != nil {
		return nil, fmt.Errorf("sigverify: %w", err)
	}
	var res *verify.VerificationResult
	err = guard("verification", func() (err error) { res, err = sv.Verify(entity, verify.NewPolicy(artifact, popts...)); return err })
	if err != nil {
		return nil, v.explain(err, entity, s, o)
	}
	return res, nil
}

// preflight denies a key signature under a keyless policy and the reverse
// before anything else, so the denial says so rather than what failed first.
func preflight(entity verify.SignedEntity, s Signer) error {
	cert := entityCert(entity)
	switch {
	case s.Key != nil && cert != nil:
		return fmt.Errorf("signed keyless by %s, not with key %s", certDesc(cert), s.Key.Name)
	case s.Key == nil && cert == nil:
		return errors.New("signed with a key, not with a keyless certificate for " + identities(s))
	}
	return nil
}

// Validate reports a signer that is neither one key nor keyless identities.
func (s Signer) Validate() error {
	switch {
	case s.Key != nil && len(s.Identities) > 0:
		return errors.New("sigverify: a signer is a key or keyless identities, not both")
	case s.Key == nil && len(s.Identities) == 0:
		return errors.New("sigverify: a signer needs a key or at least one keyless identity")
	}
	return nil
}

func (s Signer) certificateIdentities() ([]verify.CertificateIdentity, error) {
	out := make([]verify.CertificateIdentity, 0, len(s.Identities))
	for i, id := range s.Identities {
		san, err := verify.NewSANMatcher(id.Subject, id.SubjectRegExp)
		if err != nil {
			return nil, fmt.Errorf("keyless identity %d: subject: %w", i+1, err)
		}
		iss, err := verify.NewIssuerMatcher(id.Issuer, id.IssuerRegExp)
		if err != nil {
			return nil, fmt.Errorf("keyless identity %d: issuer: %w", i+1, err)
		}
		ci, err := verify.NewCertificateIdentity(san, iss, id.Extensions)
		if err != nil {
			return nil, fmt.Errorf("keyless identity %d: %w", i+1, err)
		}
		out = append(out, ci)
	}
	return out, nil
}

// String describes the identity as cosign's flags would.
func (id Identity) String() string {
	var b strings.Builder
	if id.Subject != "" {
		fmt.Fprintf(&b, "subject %q", id.Subject)
	} else {
		fmt.Fprintf(&b, "subject matching %q", id.SubjectRegExp)
	}
	if id.Issuer != "" {
		fmt.Fprintf(&b, ", issuer %q", id.Issuer)
	} else {
		fmt.Fprintf(&b, ", issuer matching %q", id.IssuerRegExp)
	}
	if (id.Extensions != certificate.Extensions{}) {
		b.WriteString(", with the required certificate extensions")
	}
	return b.String()
}

// result turns sigstore-go's result into ours.
func result(format string, s Signer, res *verify.VerificationResult) *Result {
	r := &Result{Format: format}
	if s.Key != nil {
		r.Signer = "key " + s.Key.Name
	} else if res.Signature != nil && res.Signature.Certificate != nil {
		c := *res.Signature.Certificate
		r.Certificate = &c
		r.Signer = fmt.Sprintf("%s (issuer %s)", c.SubjectAlternativeName, c.Extensions.Issuer)
	}
	for _, ts := range res.VerifiedTimestamps {
		src := "timestamp authority"
		if ts.Type == "Tlog" {
			src = "transparency log"
		}
		r.Timestamps = append(r.Timestamps, Timestamp{Source: src, URI: ts.URI, Time: ts.Timestamp})
	}
	return r
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// digestBytes decodes "sha256:<hex>".
func digestBytes(digest string) ([]byte, error) {
	if !imageref.ValidDigest(digest) {
		return nil, fmt.Errorf("digest %q is not a sha256 digest", digest)
	}
	return hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
}

// keyVerifier adapts a keys.Key to sigstore's signature.Verifier so the key's
// own algorithm (keys.Parse) decides, for bundles and legacy signatures alike.
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
	m, err := io.ReadAll(io.LimitReader(msg, MaxEnvelopeSize+1))
	if err != nil {
		return err
	}
	if len(m) > MaxEnvelopeSize {
		return errors.New("signed message too large")
	}
	return kv.k.Verify(s, m)
}
