// Package verifier decides whether the exact digest of a container image carries a
// valid cosign signature from trusted public keys, and says why when it does not.
//
// Trust material (keys) and registry credentials are passed explicitly with each
// Request; a Verifier holds only its registry options and limits.
package cosign

import (
	"errors"

	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
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

// Request asks whether one image digest is signed by enough of Keys.
type Request struct {
	// Image is the parsed reference (tag or digest), with its canonical
	// registry (imageref.Parse).
	Image imageref.Ref
	// Digest, when set, is the digest to judge instead of resolving Image's tag.
	Digest string
	// Auth is used for every registry call; nil means the node's docker config,
	// else anonymous.
	Auth *Auth
	// Keys are the trusted keys; Threshold of them must each verify a signature
	// (0 means all of them).
	Keys      []*keys.Key
	Threshold int
	// SignatureRepository, when set, is where signatures are looked up instead of
	// the image's own repository (like COSIGN_REPOSITORY).
	SignatureRepository string
}

// Signature records one signature that verified.
type Signature struct {
	Key    string `json:"key"`    // the trusted key's name
	Format string `json:"format"` // "bundle" (Sigstore bundle as OCI referrer) or "legacy" (.sig tag)
	Digest string `json:"digest"` // digest of the bundle's manifest, or of the legacy payload layer
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
