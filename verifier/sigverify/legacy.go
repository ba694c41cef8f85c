package sigverify

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/criguard/criguard/verifier/sigformat"
)

// Annotations of a legacy cosign layer (sigformat.SignatureAnnotation holds the
// signature itself).
const (
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	ChainAnnotation       = "dev.sigstore.cosign/chain"
	BundleAnnotation      = "dev.sigstore.cosign/bundle"
	TimestampAnnotation   = "dev.sigstore.cosign/rfc3161timestamp"
)

// Legacy is one layer of a legacy cosign `.sig` or `.att` manifest: its blob
// (a simple-signing payload, or a DSSE envelope) and its annotations.
type Legacy struct {
	Payload     []byte
	Annotations map[string]string
}

// VerifyLegacySignature verifies a `.sig` layer for digest: the signature
// (annotation) over the exact payload bytes by s, the payload's
// docker-manifest-digest equal to digest, and unless o relaxes it, the Rekor
// entry of the SET annotation recording this payload, signature and key or
// certificate. A keyless certificate is judged at the times the SET and the
// RFC 3161 timestamp annotation prove.
func (v *Verifier) VerifyLegacySignature(l Legacy, digest string, s Signer, o Options) (*Result, error) {
	if _, err := digestBytes(digest); err != nil {
		return nil, err
	}
	if len(l.Payload) > MaxPayloadSize {
		return nil, fmt.Errorf("the signature payload is %d bytes, larger than the %d-byte limit", len(l.Payload), MaxPayloadSize)
	}
	sig, err := sigformat.DecodeSignature(l.Annotations[sigformat.SignatureAnnotation])
	if err != nil {
		return nil, err
	}
	e, err := legacyMaterial(l, true)
	if err != nil {
		return nil, err
	}
	e.sig = bundle.NewMessageSignature(sha256Sum(l.Payload), "SHA2_256", sig)
	res, err := v.run(e, s, o, verify.WithArtifact(bytes.NewReader(l.Payload)), func() error { return e.bind(l.Payload, o) })
	if err != nil {
		return nil, err
	}
	// Only a verified payload is read for what it claims.
	ss, err := sigformat.ParseSimpleSigning(l.Payload)
	if err != nil {
		return nil, fmt.Errorf("signed by %s, but %w", describe(s, res), err)
	}
	if got := ss.Critical.Image.DockerManifestDigest; got != digest {
		return nil, fmt.Errorf("signed by %s, but for image %s, not %s: a signature for another digest", describe(s, res), got, digest)
	}
	return result(formatLegacySig, s, res), nil
}

// VerifyLegacyAttestation verifies a `.att` layer (a DSSE envelope holding an
// in-toto statement) for digest: the statement's subject must be digest, the
// envelope signed by s, and unless o relaxes it, the Rekor entry of the SET
// annotation recording this payload. Its RFC 3161 timestamp annotation is not
// used: cosign timestamps the whole envelope there, which sigstore-go's
// timestamp verification (over the signature) does not model, so a keyless
// legacy attestation needs its Rekor entry.
func (v *Verifier) VerifyLegacyAttestation(l Legacy, digest string, s Signer, o Options) (*Result, error) {
	want, err := digestBytes(digest)
	if err != nil {
		return nil, err
	}
	if len(l.Payload) > MaxEnvelopeSize {
		return nil, fmt.Errorf("the attestation envelope is %d bytes, larger than the %d-byte limit", len(l.Payload), MaxEnvelopeSize)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(l.Payload, &env); err != nil {
		return nil, fmt.Errorf("the attestation layer is not a DSSE envelope: %w", err)
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("the attestation envelope has %d signatures; cosign writes exactly one", len(env.Signatures))
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("the attestation envelope's payload is not base64: %w", err)
	}
	st, err := parseStatement(env.PayloadType, payload, digest)
	if err != nil {
		return nil, err
	}
	e, err := legacyMaterial(l, false)
	if err != nil {
		return nil, err
	}
	e.sig = &bundle.Envelope{Envelope: &env}
	res, err := v.run(e, s, o, verify.WithArtifactDigest(sha256Algorithm, want), func() error { return e.bind(payload, o) })
	if err != nil {
		return nil, err
	}
	r := result(formatLegacyAtt, s, res)
	r.PredicateType, r.Predicate = st.PredicateType, st.predicate
	return r, nil
}

// legacyEntity is legacy cosign material as sigstore-go's SignedEntity.
type legacyEntity struct {
	sig        verify.SignatureContent
	vc         verify.VerificationContent
	entries    []*tlog.Entry
	timestamps [][]byte
}

func (e *legacyEntity) HasInclusionPromise() bool { return len(e.entries) > 0 }
func (e *legacyEntity) HasInclusionProof() bool   { return false }
func (e *legacyEntity) SignatureContent() (verify.SignatureContent, error) {
	return e.sig, nil
}
func (e *legacyEntity) VerificationContent() (verify.VerificationContent, error) {
	return e.vc, nil
}
func (e *legacyEntity) TlogEntries() ([]*tlog.Entry, error) { return e.entries, nil }
func (e *legacyEntity) Timestamps() ([][]byte, error)       { return e.timestamps, nil }

// Version is the bundle version whose rules legacy material follows (cosign's
// legacy signatures predate bundles; v0.3 keeps sigstore-go's compatibility
// for certificates whose key and signature hash differ, as cosign allows).
func (e *legacyEntity) Version() (string, error) { return "v0.3", nil }

// bind requires the SET's entry to record payload (unless the log is ignored).
func (e *legacyEntity) bind(payload []byte, o Options) error {
	if o.IgnoreTlog {
		return nil
	}
	if len(e.entries) == 0 {
		return errors.New("no transparency-log entry: the layer has no " + BundleAnnotation + " annotation (signed with --tlog-upload=false?)")
	}
	return bindEntries(e.entries, payload)
}

// legacyMaterial reads the certificate, chain, SET and (for signatures)
// timestamp annotations.
func legacyMaterial(l Legacy, withTimestamp bool) (*legacyEntity, error) {
	e := &legacyEntity{vc: keyContent{}}
	for _, a := range []string{CertificateAnnotation, ChainAnnotation, BundleAnnotation, TimestampAnnotation} {
		if n := len(l.Annotations[a]); n > MaxAnnotationSize {
			return nil, fmt.Errorf("annotation %s is %d bytes, larger than the %d-byte limit", a, n, MaxAnnotationSize)
		}
	}
	if c := l.Annotations[CertificateAnnotation]; c != "" {
		certs, err := cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(c), 1)
		if err != nil || len(certs) != 1 {
			return nil, fmt.Errorf("annotation %s is not one PEM certificate: %v", CertificateAnnotation, err)
		}
		e.vc = bundle.NewCertificate(certs[0])
	}
	if ch := l.Annotations[ChainAnnotation]; ch != "" {
		// The chain is not trusted material (the trusted root is); it is only
		// bounded and must parse, so garbage is refused rather than ignored.
		if _, err := cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(ch), MaxChainCerts); err != nil {
			return nil, fmt.Errorf("annotation %s: %w (at most %d certificates are accepted)", ChainAnnotation, err, MaxChainCerts)
		}
	}
	if b := l.Annotations[BundleAnnotation]; b != "" {
		entry, err := parseSETBundle(b)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", BundleAnnotation, err)
		}
		e.entries = []*tlog.Entry{entry}
	}
	if t := l.Annotations[TimestampAnnotation]; t != "" && withTimestamp {
		var ts struct {
			SignedRFC3161Timestamp []byte `json:"SignedRFC3161Timestamp"`
		}
		if err := json.Unmarshal([]byte(t), &ts); err != nil || len(ts.SignedRFC3161Timestamp) == 0 {
			return nil, fmt.Errorf("annotation %s is not cosign's RFC 3161 timestamp JSON: %v", TimestampAnnotation, err)
		}
		e.timestamps = [][]byte{ts.SignedRFC3161Timestamp}
	}
	return e, nil
}

// parseSETBundle reads cosign's Rekor bundle annotation: the SET and the
// entry it signs (body, integrated time, log index, log ID).
func parseSETBundle(s string) (*tlog.Entry, error) {
	var rb struct {
		SignedEntryTimestamp []byte
		Payload              struct {
			Body           []byte `json:"body"`
			IntegratedTime int64  `json:"integratedTime"`
			LogIndex       int64  `json:"logIndex"`
			LogID          string `json:"logID"`
		}
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		return nil, fmt.Errorf("not cosign's Rekor bundle JSON: %w", err)
	}
	if len(rb.SignedEntryTimestamp) == 0 {
		return nil, errors.New("no SignedEntryTimestamp")
	}
	if len(rb.Payload.Body) == 0 || rb.Payload.IntegratedTime <= 0 || rb.Payload.LogIndex < 0 {
		return nil, errors.New("the entry has no body, integrated time or log index")
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil || len(logID) != 32 {
		return nil, fmt.Errorf("logID %q is not a hex sha256", rb.Payload.LogID)
	}
	var entry *tlog.Entry
	err = guard("the entry body", func() (err error) {
		entry, err = tlog.NewEntry(rb.Payload.Body, rb.Payload.IntegratedTime, rb.Payload.LogIndex, logID, rb.SignedEntryTimestamp, nil) //nolint:staticcheck // the Rekor v1 entry of a SET
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("the entry body is not a Rekor entry: %w", err)
	}
	if err := tlog.ValidateEntry(entry); err != nil {
		return nil, fmt.Errorf("the entry body is not a valid Rekor entry: %w", err)
	}
	return entry, nil
}

// keyContent is the verification content of a key-signed legacy layer: the key
// is the policy's (looked up in the trusted material under keyHint).
type keyContent struct{}

func (keyContent) CompareKey(key any, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier(keyHint)
	if err != nil {
		return false
	}
	pub, err := v.PublicKey()
	if err != nil {
		return false
	}
	eq, ok := key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

func (keyContent) ValidAtTime(t time.Time, tm root.TrustedMaterial) bool {
	v, err := tm.PublicKeyVerifier(keyHint)
	return err == nil && v.ValidAtTime(t)
}

func (keyContent) Certificate() *x509.Certificate        { return nil }
func (k keyContent) PublicKey() verify.PublicKeyProvider { return k }
func (keyContent) Hint() string                          { return keyHint }

func sha256Sum(b []byte) []byte {
	d, _ := hex.DecodeString(sha256Hex(b))
	return d
}
