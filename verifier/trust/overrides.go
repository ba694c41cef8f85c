package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// MaxOverridePEM bounds one override's PEM text (a key or a certificate chain).
const MaxOverridePEM = 256 << 10

// MaxChainCerts bounds the certificates of one override chain.
const MaxChainCerts = 10

// Overrides replace parts of a trusted root for one attestor, as Kyverno's
// `rekor.pubkey`, `ctlog.pubkey`, `ctlog.tsaCertChain` and `keyless.roots` do.
// Each non-empty field replaces (does not add to) that part of the base root.
type Overrides struct {
	// RekorPubKey is a PEM public key: the only Rekor log trusted (rekor.pubkey).
	RekorPubKey string
	// RekorURL is informational (rekor.url): verification is offline.
	RekorURL string
	// CTLogPubKey is a PEM public key: the only CT log trusted (ctlog.pubkey).
	CTLogPubKey string
	// TSACertChain is a PEM chain, leaf first, root last: the only timestamp
	// authority trusted (ctlog.tsaCertChain).
	TSACertChain string
	// FulcioRoots is PEM: root certificates (and intermediates) of the only
	// Fulcio CA trusted (keyless.roots).
	FulcioRoots string
}

// Empty reports whether o overrides nothing.
func (o Overrides) Empty() bool {
	return o.RekorPubKey == "" && o.CTLogPubKey == "" && o.TSACertChain == "" && o.FulcioRoots == ""
}

// Apply returns base with o's replacements. base may be nil when every part
// the caller needs is overridden.
func Apply(base root.TrustedMaterial, o Overrides) (root.TrustedMaterial, error) {
	if base == nil {
		base = &root.BaseTrustedMaterial{}
	}
	if o.Empty() {
		return base, nil
	}
	t := &overridden{TrustedMaterial: base}
	var err error
	if o.RekorPubKey != "" {
		if t.rekor, err = logFromPEM("rekor.pubkey", o.RekorPubKey, o.RekorURL); err != nil {
			return nil, err
		}
	}
	if o.CTLogPubKey != "" {
		if t.ct, err = logFromPEM("ctlog.pubkey", o.CTLogPubKey, ""); err != nil {
			return nil, err
		}
	}
	if o.TSACertChain != "" {
		if t.tsas, err = tsaFromPEM(o.TSACertChain); err != nil {
			return nil, err
		}
	}
	if o.FulcioRoots != "" {
		if t.cas, err = casFromPEM(o.FulcioRoots); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// overridden answers the overridden parts itself and the rest from the base.
type overridden struct {
	root.TrustedMaterial
	rekor, ct map[string]*root.TransparencyLog
	tsas      []root.TimestampingAuthority
	cas       []root.CertificateAuthority
}

func (t *overridden) RekorLogs() map[string]*root.TransparencyLog {
	if t.rekor != nil {
		return t.rekor
	}
	return t.TrustedMaterial.RekorLogs()
}

func (t *overridden) CTLogs() map[string]*root.TransparencyLog {
	if t.ct != nil {
		return t.ct
	}
	return t.TrustedMaterial.CTLogs()
}

func (t *overridden) TimestampingAuthorities() []root.TimestampingAuthority {
	if t.tsas != nil {
		return t.tsas
	}
	return t.TrustedMaterial.TimestampingAuthorities()
}

func (t *overridden) FulcioCertificateAuthorities() []root.CertificateAuthority {
	if t.cas != nil {
		return t.cas
	}
	return t.TrustedMaterial.FulcioCertificateAuthorities()
}

// keyValidFrom is when an override key is taken to be valid from: Kyverno's
// fields carry no validity period, and sigstore-go refuses a log key whose
// start is unset.
var keyValidFrom = time.Unix(0, 0).UTC()

// logFromPEM makes a transparency log (Rekor or CT) from a PEM public key; its
// log ID is the sha256 of the key's DER, as both Rekor and RFC 6962 define it.
func logFromPEM(field, pemKey, url string) (map[string]*root.TransparencyLog, error) {
	if len(pemKey) > MaxOverridePEM {
		return nil, fmt.Errorf("%s: %d bytes, larger than the %d-byte limit", field, len(pemKey), MaxOverridePEM)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey([]byte(pemKey))
	if err != nil {
		return nil, fmt.Errorf("%s: not a PEM public key: %w", field, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	sigHash, err := signatureHash(pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	id := sha256.Sum256(der)
	return map[string]*root.TransparencyLog{hex.EncodeToString(id[:]): {
		BaseURL:             url,
		ID:                  id[:],
		ValidityPeriodStart: keyValidFrom,
		HashFunc:            crypto.SHA256,
		PublicKey:           pub,
		SignatureHashFunc:   sigHash,
	}}, nil
}

// signatureHash is the hash a log signs with for its key type (the ECDSA curve
// decides, as in trusted roots' keyDetails).
func signatureHash(pub crypto.PublicKey) (crypto.Hash, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return crypto.SHA256, nil
	}
	switch k.Curve {
	case elliptic.P256():
		return crypto.SHA256, nil
	case elliptic.P384():
		return crypto.SHA384, nil
	case elliptic.P521():
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
}

func certsFromPEM(field, pemCerts string) ([]*x509.Certificate, error) {
	if len(pemCerts) > MaxOverridePEM {
		return nil, fmt.Errorf("%s: %d bytes, larger than the %d-byte limit", field, len(pemCerts), MaxOverridePEM)
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(pemCerts), MaxChainCerts)
	if err != nil {
		return nil, fmt.Errorf("%s: not PEM certificates (at most %d): %w", field, MaxChainCerts, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", field)
	}
	return certs, nil
}

// tsaFromPEM makes the timestamp authority of a chain written leaf first.
func tsaFromPEM(pemChain string) ([]root.TimestampingAuthority, error) {
	certs, err := certsFromPEM("ctlog.tsaCertChain", pemChain)
	if err != nil {
		return nil, err
	}
	if len(certs) < 2 {
		return nil, errors.New("ctlog.tsaCertChain: want the TSA's signing certificate and its root (leaf first)")
	}
	return []root.TimestampingAuthority{&root.SigstoreTimestampingAuthority{
		Leaf:          certs[0],
		Intermediates: certs[1 : len(certs)-1],
		Root:          certs[len(certs)-1],
	}}, nil
}

// casFromPEM makes one Fulcio CA per self-signed certificate given; the other
// certificates are intermediates usable under each root.
func casFromPEM(pemCerts string) ([]root.CertificateAuthority, error) {
	certs, err := certsFromPEM("keyless.roots", pemCerts)
	if err != nil {
		return nil, err
	}
	var roots, inter []*x509.Certificate
	for _, c := range certs {
		if c.CheckSignatureFrom(c) == nil && c.IsCA {
			roots = append(roots, c)
		} else {
			inter = append(inter, c)
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("keyless.roots: no self-signed CA certificate among them")
	}
	cas := make([]root.CertificateAuthority, 0, len(roots))
	for _, r := range roots {
		cas = append(cas, &root.FulcioCertificateAuthority{Root: r, Intermediates: inter})
	}
	return cas, nil
}
