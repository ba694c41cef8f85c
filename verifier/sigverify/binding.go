package sigverify

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/tlog"
)

// entryBody is the part of a Rekor entry body that says what was logged:
// hashedrekord (v0.0.1 data.hash, v0.0.2 hashedRekordV002.data), dsse (v0.0.1
// payloadHash, v0.0.2 dsseV002.payloadHash) and intoto v0.0.2
// (content.payloadHash).
type entryBody struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Spec       struct {
		Data struct {
			Hash hexHash `json:"hash"`
		} `json:"data"`
		PayloadHash hexHash `json:"payloadHash"`
		Content     struct {
			PayloadHash hexHash `json:"payloadHash"`
		} `json:"content"`
		HashedRekordV002 struct {
			Data b64Hash `json:"data"`
		} `json:"hashedRekordV002"`
		DSSEV002 struct {
			PayloadHash b64Hash `json:"payloadHash"`
		} `json:"dsseV002"`
	} `json:"spec"`
}

type hexHash struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"value"`
}

type b64Hash struct {
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
}

// loggedHash returns the sha256 (hex) that the entry records for the signed
// content: the artifact of a hashedrekord, the DSSE payload of a dsse or intoto
// entry.
func loggedHash(e *tlog.Entry) (string, error) {
	var b entryBody
	if err := json.Unmarshal(e.TransparencyLogEntry().GetCanonicalizedBody(), &b); err != nil {
		return "", fmt.Errorf("its body is not JSON: %w", err)
	}
	var h hexHash
	switch {
	case b.Kind == "hashedrekord" && b.APIVersion == "0.0.1":
		h = b.Spec.Data.Hash
	case b.Kind == "dsse" && b.APIVersion == "0.0.1":
		h = b.Spec.PayloadHash
	case b.Kind == "intoto" && b.APIVersion == "0.0.2":
		h = b.Spec.Content.PayloadHash
	case b.Kind == "hashedrekord" && b.APIVersion == "0.0.2":
		return b.Spec.HashedRekordV002.Data.hex()
	case b.Kind == "dsse" && b.APIVersion == "0.0.2":
		return b.Spec.DSSEV002.PayloadHash.hex()
	default:
		return "", fmt.Errorf("it is a %s v%s entry, a kind that does not record an image signature", b.Kind, b.APIVersion)
	}
	if !strings.EqualFold(h.Algorithm, "sha256") {
		return "", fmt.Errorf("it records a %q hash, not sha256", h.Algorithm)
	}
	return strings.ToLower(h.Value), nil
}

func (h b64Hash) hex() (string, error) {
	if h.Algorithm != "SHA2_256" {
		return "", fmt.Errorf("it records a %q hash, not SHA2_256", h.Algorithm)
	}
	d, err := base64.StdEncoding.DecodeString(h.Digest)
	if err != nil {
		return "", fmt.Errorf("its hash is not base64: %w", err)
	}
	return hex.EncodeToString(d), nil
}

// bindEntries requires every transparency-log entry to record content (the
// signed payload): sigstore-go checks that an entry's signature and key are the
// bundle's, not what was signed, and an entry is only evidence about the
// payload it records.
func bindEntries(entries []*tlog.Entry, content []byte) error {
	want := sha256Hex(content)
	for i, e := range entries {
		got, err := loggedHash(e)
		if err != nil {
			return fmt.Errorf("transparency-log entry %d (log index %d) cannot be bound to this signature: %w", i+1, e.LogIndex(), err)
		}
		if got != want {
			return fmt.Errorf("transparency-log entry %d (log index %d) records a payload with sha256 %s, not this signature's payload (sha256 %s): it is an entry for another signature or image", i+1, e.LogIndex(), got, want)
		}
	}
	return nil
}
