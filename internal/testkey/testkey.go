// Package testkey makes throwaway signing keys for tests: a fresh ECDSA P-256
// key that signs the way cosign does, and its public key in PEM.
package testkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// New returns a signer over a new P-256 key (SHA-256) and its public key as PEM.
func New(tb testing.TB) (signature.Signer, []byte) {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		tb.Fatal(err)
	}
	pemData, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		tb.Fatal(err)
	}
	return s, pemData
}
