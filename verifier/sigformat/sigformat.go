// Package sigformat parses the registry data cosign writes: OCI manifests and
// indexes, legacy simple-signing payloads with their signature annotations, and
// Sigstore bundles whose DSSE envelope carries an in-toto statement.
//
// Every parser takes bytes already bounded by the caller, returns an error for
// anything malformed, and never panics (see the fuzz targets).
package sigformat

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/bundle"

	"github.com/criguard/criguard/verifier/imageref"
)

// Names cosign uses.
const (
	// BundleMediaType is the Sigstore bundle v0.3 media type cosign v3 writes.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// BundleMediaTypePrefix matches every bundle version's layer media type.
	BundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"
	// EmptyConfigMediaType is the OCI empty config; some registries report it as
	// a referrer's artifactType instead of the manifest's own artifactType.
	EmptyConfigMediaType = "application/vnd.oci.empty.v1+json"
	// SimpleSigningMediaType is the layer media type of legacy signatures.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureAnnotation holds a legacy layer's base64 signature.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// CosignSignPredicate is the predicate type of an image signature in a bundle
	// (as opposed to an attestation such as an SBOM or provenance).
	CosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"
	// InTotoPayloadType is the DSSE payload type of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
)

// MaxEntries bounds the descriptors read from one manifest or index.
const MaxEntries = 10000

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Manifest is an OCI image manifest (or Docker schema 2 manifest).
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// Index is an OCI image index, as served by the referrers API or its fallback tag.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

func checkDescriptor(what string, d Descriptor) error {
	if !imageref.ValidDigest(d.Digest) {
		return fmt.Errorf("%s: digest %q is not a sha256 digest", what, d.Digest)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s %s: negative size %d", what, d.Digest, d.Size)
	}
	return nil
}

// ParseManifest parses an image manifest; every layer must have a sha256 digest
// and a size.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest is not valid JSON: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest schemaVersion %d is not 2", m.SchemaVersion)
	}
	if len(m.Layers) > MaxEntries {
		return nil, fmt.Errorf("manifest has %d layers (limit %d)", len(m.Layers), MaxEntries)
	}
	for i, l := range m.Layers {
		if err := checkDescriptor(fmt.Sprintf("layer %d", i), l); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor("subject", *m.Subject); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	return &m, nil
}

// ParseIndex parses an image index (a referrers list).
func ParseIndex(b []byte) (*Index, error) {
	var ix Index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("index is not valid JSON: %w", err)
	}
	if ix.SchemaVersion != 2 {
		return nil, fmt.Errorf("index schemaVersion %d is not 2", ix.SchemaVersion)
	}
	if len(ix.Manifests) > MaxEntries {
		return nil, fmt.Errorf("index lists %d manifests (limit %d)", len(ix.Manifests), MaxEntries)
	}
	for i, d := range ix.Manifests {
		if err := checkDescriptor(fmt.Sprintf("index entry %d", i), d); err != nil {
			return nil, fmt.Errorf("index: %w", err)
		}
	}
	return &ix, nil
}

// SimpleSigning is the part of cosign's simple-signing payload that binds a
// signature to an image.
type SimpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// ParseSimpleSigning parses a legacy signature payload; the signed digest must be
// present and well formed.
func ParseSimpleSigning(b []byte) (*SimpleSigning, error) {
	var p SimpleSigning
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("simple-signing payload is not valid JSON: %w", err)
	}
	if d := p.Critical.Image.DockerManifestDigest; !imageref.ValidDigest(d) {
		return nil, fmt.Errorf("simple-signing payload: critical.image.docker-manifest-digest %q is not a sha256 digest", d)
	}
	return &p, nil
}

// MaxSignatureSize bounds a decoded signature (an RSA-8192 signature is 1 KiB).
const MaxSignatureSize = 8 << 10

// DecodeSignature decodes a legacy layer's base64 signature annotation.
func DecodeSignature(annotation string) ([]byte, error) {
	if annotation == "" {
		return nil, errors.New("no " + SignatureAnnotation + " annotation")
	}
	if len(annotation) > base64.StdEncoding.EncodedLen(MaxSignatureSize) {
		return nil, fmt.Errorf("signature annotation is %d characters (limit %d)", len(annotation), base64.StdEncoding.EncodedLen(MaxSignatureSize))
	}
	sig, err := base64.StdEncoding.DecodeString(annotation)
	if err != nil {
		return nil, fmt.Errorf("signature annotation is not base64: %w", err)
	}
	if len(sig) == 0 {
		return nil, errors.New("signature annotation is empty")
	}
	return sig, nil
}

// ParseBundle parses a Sigstore bundle (v0.3 or later) that carries a DSSE
// envelope, as cosign v3 writes for an image signature.
func ParseBundle(b []byte) (bn *bundle.Bundle, err error) {
	// sigstore-go hands transparency-log entries to rekor's parsers, which
	// panic on some malformed bodies (no apiVersion); anyone who can push a
	// referrer must not be able to crash the node's CRI proxy with one.
	defer func() {
		if r := recover(); r != nil {
			bn, err = nil, fmt.Errorf("not a valid Sigstore bundle: malformed material made the Sigstore library fail (%v); refused", r)
		}
	}()
	bn = new(bundle.Bundle)
	if err := bn.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("not a valid Sigstore bundle: %w", err)
	}
	if !bn.MinVersion("v0.3") {
		mt := ""
		if bn.Bundle != nil {
			mt = bn.GetMediaType()
		}
		return nil, fmt.Errorf("bundle media type %q is older than v0.3", mt)
	}
	env := bn.GetDsseEnvelope()
	if env == nil {
		return nil, errors.New("bundle has no DSSE envelope (a message signature is not an image signature)")
	}
	if len(env.GetSignatures()) == 0 {
		return nil, errors.New("bundle's DSSE envelope has no signatures")
	}
	return bn, nil
}

// Statement is the in-toto statement inside a bundle's DSSE envelope.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
}

// Subject is one in-toto subject.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// MaxSubjects bounds the subjects of one statement (sigstore-go uses the same
// order of magnitude).
const MaxSubjects = 1024

// ParseStatement parses a DSSE payload as an in-toto statement (v0.1 or v1).
func ParseStatement(payloadType string, payload []byte) (*Statement, error) {
	if payloadType != InTotoPayloadType {
		return nil, fmt.Errorf("DSSE payload type %q is not %s", payloadType, InTotoPayloadType)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	var st Statement
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("in-toto statement is not valid JSON: %w", err)
	}
	switch st.Type {
	case "https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1":
	default:
		return nil, fmt.Errorf("in-toto statement _type %q is not a known statement type", st.Type)
	}
	if len(st.Subject) == 0 {
		return nil, errors.New("in-toto statement has no subject")
	}
	if len(st.Subject) > MaxSubjects {
		return nil, fmt.Errorf("in-toto statement has %d subjects (limit %d)", len(st.Subject), MaxSubjects)
	}
	return &st, nil
}

// SubjectDigests returns the statement's sha256 subject digests as "sha256:<hex>".
func (s *Statement) SubjectDigests() []string {
	var out []string
	for _, sub := range s.Subject {
		if h, ok := sub.Digest["sha256"]; ok {
			out = append(out, "sha256:"+strings.ToLower(h))
		}
	}
	return out
}

// HasSubject reports whether digest ("sha256:<hex>") is one of the subjects.
func (s *Statement) HasSubject(digest string) bool {
	for _, d := range s.SubjectDigests() {
		if d == digest {
			return true
		}
	}
	return false
}
