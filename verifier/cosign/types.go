// Package cosign decides whether the exact digest of a container image carries
// valid cosign signatures (or in-toto attestations) from trusted signers —
// public keys, with or without a transparency-log entry, or keyless Fulcio
// identities — and says why when it does not. It finds the signature material
// in the registry (Sigstore bundles as OCI referrers or under the fallback tag,
// legacy .sig and .att tags); every verification of that material is
// verifier/sigverify's.
//
// Trust material (keys, the Sigstore trusted root, per-attestor overrides) and
// registry credentials are passed explicitly with each Request; a Verifier
// holds only its registry options and limits.
package cosign

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/criguard/criguard/verifier/attest"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/sigverify"
	"github.com/criguard/criguard/verifier/trust"
)

// ErrIncomplete marks a verification that could not finish: the registry was
// unreachable, answered with a server error, or the deadline passed. Callers apply
// their failure policy to it; it is never an allow by itself.
var ErrIncomplete = errors.New("verification could not complete")

// Auth is a registry credential: the AuthConfig kubelet sent with a CRI call, or
// one from the node's docker config. Its fields never reach logs.
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 "user:password", as in docker config
	IdentityToken string
	RegistryToken string
}

// Attestor is one trusted signer: a public key, or keyless identities (a
// certificate from a trusted Fulcio CA for any one of them).
type Attestor struct {
	// Name is how verdicts name the attestor; "" means the key's name, or the
	// identities.
	Name       string
	Key        *keys.Key
	Identities []sigverify.Identity
	// Overrides replace parts of the request's trusted root for this attestor
	// (Kyverno's rekor.pubkey, ctlog.pubkey, ctlog.tsaCertChain, keyless.roots).
	Overrides trust.Overrides
	// IgnoreTlog waives the transparency-log entry (Kyverno rekor.ignoreTlog,
	// cosign --insecure-ignore-tlog); IgnoreSCT the keyless certificate's
	// embedded SCT (ctlog.ignoreSCT, --insecure-ignore-sct).
	IgnoreTlog bool
	IgnoreSCT  bool
}

// KeyAttestors makes one key attestor per key, each requiring a
// transparency-log entry unless ignoreTlog.
func KeyAttestors(ignoreTlog bool, ks ...*keys.Key) []Attestor {
	out := make([]Attestor, len(ks))
	for i, k := range ks {
		out[i] = Attestor{Key: k, IgnoreTlog: ignoreTlog}
	}
	return out
}

// Label names the attestor in verdicts.
func (a Attestor) Label() string {
	switch {
	case a.Name != "":
		return a.Name
	case a.Key != nil:
		return a.Key.Name
	}
	ids := make([]string, len(a.Identities))
	for i, id := range a.Identities {
		ids[i] = id.String()
	}
	return "keyless " + strings.Join(ids, " or ")
}

// SignerID identifies the signers the attestor can accept, for how large a
// threshold can be (Needed): a key by its material (keys.Key.Fingerprint: the
// same key under two names is one signer), keyless identities by what they
// accept. A verdict counts the signers actually proven (Request.Threshold).
func (a Attestor) SignerID() string {
	if a.Key != nil {
		return "key:" + a.Key.Fingerprint()
	}
	ids := make([]string, len(a.Identities))
	for i, id := range a.Identities {
		ids[i] = fmt.Sprintf("%q/%q/%q/%q/%+v", id.Subject, id.SubjectRegExp, id.Issuer, id.IssuerRegExp, id.Extensions)
	}
	return "keyless:" + strings.Join(ids, "|")
}

func (a Attestor) check() error {
	return sigverify.Signer{Key: a.Key, Identities: a.Identities}.Validate()
}

// Attestation asks for in-toto attestations instead of image signatures: of
// PredicateType, and whose predicate meets Conditions (nil: any predicate).
type Attestation struct {
	PredicateType string
	Conditions    *attest.Conditions
}

// Request asks whether one image digest is signed by Threshold distinct
// signers among Attestors (or, with Attestation, attested by them).
type Request struct {
	// Image is the parsed reference (tag or digest), with its canonical
	// registry (imageref.Parse).
	Image imageref.Ref
	// Digest, when set, is the digest to judge instead of resolving Image's tag.
	Digest string
	// Auth is used for every registry call; nil means the node's docker config,
	// else anonymous.
	Auth *Auth
	// Attestors are the trusted signers. Threshold is how many distinct
	// proven signers must verify (0: as many as the attestors' distinct
	// SignerIDs): each counted attestor is credited to a different signer the
	// signatures prove, a key by its material, a keyless certificate by its
	// SAN and OIDC issuer. So one keyless signature matching two attestors
	// counts once. Stricter than Kyverno's count, which counts attestors.
	Attestors []Attestor
	Threshold int
	// Trust is the Sigstore trusted root (Fulcio CAs, Rekor and CT logs,
	// timestamp authorities) for transparency-log entries and keyless
	// certificates; nil trusts none, so only key attestors with IgnoreTlog
	// can verify.
	Trust root.TrustedMaterial
	// Attestation, when set, asks for attestations of its type meeting its
	// conditions instead of image signatures: each attestor counts when it
	// signed at least one such attestation of the digest and every one of its
	// attestations of that type meets the conditions (as Kyverno).
	Attestation *Attestation
	// SignatureRepository, when set, is where signatures are looked up instead of
	// the image's own repository (like COSIGN_REPOSITORY).
	SignatureRepository string
}

// Signature records one signature (or attestation) that verified.
type Signature struct {
	Key    string `json:"key"`    // the attestor's label (Attestor.Label)
	Format string `json:"format"` // "bundle" (Sigstore bundle as OCI referrer), "legacy" (.sig tag) or "legacy attestation" (.att tag)
	Digest string `json:"digest"` // digest of the bundle's manifest, or of the legacy layer
	// Signer is who signed, as the verification proved it: the key, or the
	// certificate's identity and issuer.
	Signer string `json:"signer,omitempty"`
	// PredicateType is an attestation's predicate type.
	PredicateType string `json:"predicateType,omitempty"`
}

// Result is a verdict for one image digest.
type Result struct {
	Allowed bool
	Image   string // the canonical reference judged
	Digest  string // the digest judged
	// Verified lists the signatures trusted keys verified for Digest; on a
	// denial for an unmet threshold it shows which keys did sign.
	Verified []Signature
	// Reason says, for a denial, what was found and what to do; empty on allow.
	Reason string
}
