package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

func pemOf(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	b, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name    string
		pem     []byte
		alg     string
		wantErr string
	}{
		{"p256 default", pemOf(t, p256.Public()), "", ""},
		{"p256 sha384", pemOf(t, p256.Public()), "SHA384", ""},
		{"rsa pss", pemOf(t, rsa2048.Public()), "rsa-pss-sha256", ""},
		{"pss on ecdsa", pemOf(t, p256.Public()), "rsa-pss-sha256", "for RSA keys"},
		{"p224 refused", pemOf(t, p224.Public()), "", "curve"},
		{"weak rsa", pemOf(t, rsa1024.Public()), "", "too weak"},
		{"unknown alg", pemOf(t, p256.Public()), "md5", "unknown signature algorithm"},
		{"empty", nil, "", "empty"},
		{"garbage", []byte("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"), "", "not a PEM public key"},
		{"oversized", []byte(strings.Repeat("A", MaxPEMSize+1)), "", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("k", tt.pem, tt.alg)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	msg := []byte("payload")
	h := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	k, err := Parse("a", pemOf(t, priv.Public()), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Verify(sig, msg); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	if err := k.Verify(sig, []byte("payloaD")); err == nil {
		t.Fatal("signature over another message accepted")
	}
	k2, _ := Parse("b", pemOf(t, other.Public()), "")
	if err := k2.Verify(sig, msg); err == nil {
		t.Fatal("signature accepted by the wrong key")
	}
}

func TestLoadFileFixtures(t *testing.T) {
	// Keys made by the real cosign CLI (testdata/cosign/regenerate.sh).
	dir := filepath.Join("..", "..", "testdata", "cosign", "keys")
	for _, name := range []string{"a.pub", "b.pub", "rsa.pub"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("fixture key missing: %v", err)
		}
		if _, err := LoadFile(filepath.Join(dir, name), ""); err != nil {
			t.Errorf("LoadFile(%s): %v", name, err)
		}
	}
}
