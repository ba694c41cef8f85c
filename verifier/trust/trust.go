// Package trust loads the Sigstore trust material that keyless signatures,
// transparency-log entries and timestamps are verified against: a trusted root
// (trusted_root.json, the format of `cosign trusted-root create`), the
// Sigstore public-good root criguard embeds, and per-attestor overrides as
// Kyverno spells them.
package trust

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// MaxRootSize bounds a trusted root file: the public-good root is ~7 KiB; one
// with many key rotations stays far below this.
const MaxRootSize = 1 << 20

// Parse reads a trusted root strictly: valid JSON of the trusted-root media type
// with no unknown fields (sigstore-go's protojson decoding rejects them), and at
// least one of Fulcio CAs, Rekor logs or timestamp authorities, since a root
// that trusts nothing could only ever deny and is more likely a wrong file.
func Parse(data []byte) (*root.TrustedRoot, error) {
	if len(data) > MaxRootSize {
		return nil, fmt.Errorf("trusted root is %d bytes, larger than the %d-byte limit", len(data), MaxRootSize)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("trusted root is empty")
	}
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not a Sigstore trusted root (%s): %w", root.TrustedRootMediaType01, err)
	}
	if len(tr.FulcioCertificateAuthorities()) == 0 && len(tr.RekorLogs()) == 0 && len(tr.TimestampingAuthorities()) == 0 {
		return nil, errors.New("trusted root lists no certificate authority, transparency log or timestamp authority")
	}
	return tr, nil
}

// LoadFile reads and parses a trusted root file; errors name the file.
func LoadFile(path string) (*root.TrustedRoot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRootSize+1))
	if err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", path, err)
	}
	tr, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", path, err)
	}
	return tr, nil
}

// publicGood is a snapshot of the Sigstore public-good trusted root, copied
// byte for byte from sigstore-go v1.1.4's examples/trusted-root-public-good.json
// (sha256 4364d7724c04cc912ce2a6c45ed2610e8d8d1c4dc857fb500292738d4d9c8d2c).
//
// Why a copy: sigstore-go v1.1.4's tuf package embeds only the TUF trust anchor
// (repository/root.json, which expired 2026-01-22 and is meant to be updated
// online), not the trusted_root.json target, so it offers nothing usable
// offline; sigstore/sigstore's deprecated pkg/tuf embeds a trusted_root.json
// but only behind its online TUF client. The snapshot knows the Fulcio CAs,
// the Rekor v1 log, the CT logs and the timestamp authority as of that release;
// keys rotated since are unknown to it, which only ever denies. Nodes that need
// newer material pass --trusted-root.
//
//go:embed embedded/public-good.json
var publicGood []byte

// PublicGood returns the embedded Sigstore public-good trusted root.
func PublicGood() (*root.TrustedRoot, error) {
	tr, err := Parse(publicGood)
	if err != nil {
		return nil, fmt.Errorf("embedded public-good trusted root: %w", err)
	}
	return tr, nil
}
