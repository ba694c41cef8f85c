// Package keys loads trusted public keys (PEM) and verifies signatures with them,
// through sigstore's signature package: no hand-written crypto.
package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// MaxPEMSize bounds a key file or inline key: real public keys are under 4 KiB.
const MaxPEMSize = 64 << 10

// Key is a trusted public key with the algorithm its signatures use.
type Key struct {
	Name      string // how verdicts refer to the key: a file path or a policy entry
	Algorithm string // canonical algorithm name, see Parse
	verifier  signature.Verifier
	// fingerprint is the sha256 of the key's PKIX DER: what identifies the key
	// material, whatever the key is named.
	fingerprint string
}

// Algorithms accepted by Parse. The default, "", is sha256 (cosign's default for
// every key type). The rsa-pss-* names select RSASSA-PSS; plain names on an RSA key
// select PKCS#1 v1.5, which is what cosign writes.
var algorithms = map[string]struct {
	hash crypto.Hash
	pss  bool
}{
	"sha256":         {crypto.SHA256, false},
	"sha384":         {crypto.SHA384, false},
	"sha512":         {crypto.SHA512, false},
	"rsa-pss-sha256": {crypto.SHA256, true},
	"rsa-pss-sha384": {crypto.SHA384, true},
	"rsa-pss-sha512": {crypto.SHA512, true},
}

// Parse loads one PEM public key. algorithm is "" (sha256), "sha256", "sha384",
// "sha512", or "rsa-pss-sha256|384|512" (RSA keys only). Accepted key types: ECDSA
// P-256, P-384, P-521; RSA of at least 2048 bits; Ed25519 (algorithm ignored).
func Parse(name string, pemData []byte, algorithm string) (*Key, error) {
	if len(pemData) > MaxPEMSize {
		return nil, fmt.Errorf("key %s: %d bytes is larger than the %d-byte limit for a public key", name, len(pemData), MaxPEMSize)
	}
	alg := strings.ToLower(strings.TrimSpace(algorithm))
	if alg == "" {
		alg = "sha256"
	}
	a, ok := algorithms[alg]
	if !ok {
		return nil, fmt.Errorf("key %s: unknown signature algorithm %q (want sha256, sha384, sha512 or rsa-pss-sha256/384/512)", name, algorithm)
	}
	pemData = bytes.TrimSpace(pemData)
	if len(pemData) == 0 {
		return nil, fmt.Errorf("key %s: empty: expected a PEM public key", name)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemData)
	if err != nil {
		return nil, fmt.Errorf("key %s: not a PEM public key: %w", name, err)
	}
	var v signature.Verifier
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if a.pss {
			return nil, fmt.Errorf("key %s: algorithm %s is for RSA keys, this is an ECDSA key", name, alg)
		}
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("key %s: ECDSA curve %s is not accepted (P-256, P-384, P-521 are)", name, k.Curve.Params().Name)
		}
		v, err = signature.LoadECDSAVerifier(k, a.hash)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("key %s: RSA key of %d bits is too weak (at least 2048 required)", name, k.N.BitLen())
		}
		if a.pss {
			v, err = signature.LoadRSAPSSVerifier(k, a.hash, nil)
		} else {
			v, err = signature.LoadRSAPKCS1v15Verifier(k, a.hash)
		}
	case ed25519.PublicKey:
		if a.pss {
			return nil, fmt.Errorf("key %s: algorithm %s is for RSA keys, this is an Ed25519 key", name, alg)
		}
		v, err = signature.LoadED25519Verifier(k)
	default:
		return nil, fmt.Errorf("key %s: unsupported public key type %T", name, pub)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	sum := sha256.Sum256(der)
	return &Key{Name: name, Algorithm: alg, verifier: v, fingerprint: hex.EncodeToString(sum[:])}, nil
}

// LoadFile reads and parses a PEM public key file; the key is named by its path.
func LoadFile(path, algorithm string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPEMSize+1))
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return Parse(path, data, algorithm)
}

// Verify checks sig over message (the message is hashed with the key's algorithm).
func (k *Key) Verify(sig, message []byte) error {
	return k.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(message))
}

// Fingerprint identifies the key material: the hex sha256 of its PKIX DER.
func (k *Key) Fingerprint() string { return k.fingerprint }

// PublicKey returns the key's public key (for bundle verification libraries).
func (k *Key) PublicKey() (crypto.PublicKey, error) {
	return k.verifier.PublicKey()
}
