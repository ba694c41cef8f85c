package sigverify

import (
	"testing"
)

// The fuzz targets feed hostile bytes where registry content goes; with the
// fixture trust and key they must never panic, and whatever they allow must
// be what was asked for.

func FuzzVerifyBundle(f *testing.F) {
	v := fixtureVerifier(f)
	for _, repo := range []string{"fx/keyless-bundle", "fx/key-attest"} {
		for _, b := range loadImage(f, repo).bundles {
			f.Add(b)
		}
	}
	m := loadImage(f, "fx/keyless-bundle")
	signers := []Signer{{Identities: []Identity{alice}}, {Key: keyT(f)}}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range signers {
			if r, err := v.VerifyBundle(b, m.digest, s, Options{}); err == nil && r.PredicateType == "" {
				t.Fatalf("allowed a bundle without a predicate type: %+v", r)
			}
		}
	})
}

func FuzzVerifyLegacySignature(f *testing.F) {
	v := fixtureVerifier(f)
	for _, repo := range []string{"fx/keyless-legacy", "fx/key-tlog-legacy"} {
		l := loadImage(f, repo).sigs[0]
		a := l.Annotations
		f.Add(l.Payload, a["dev.cosignproject.cosign/signature"], a[CertificateAnnotation], a[ChainAnnotation], a[BundleAnnotation], a[TimestampAnnotation])
	}
	digest := loadImage(f, "fx/keyless-legacy").digest
	signers := []Signer{{Identities: []Identity{alice}}, {Key: keyT(f)}}
	f.Fuzz(func(t *testing.T, payload []byte, sig, cert, chain, set, ts string) {
		l := Legacy{Payload: payload, Annotations: map[string]string{
			"dev.cosignproject.cosign/signature": sig, CertificateAnnotation: cert, ChainAnnotation: chain,
			BundleAnnotation: set, TimestampAnnotation: ts,
		}}
		for _, s := range signers {
			for _, o := range []Options{{}, {IgnoreTlog: true}} {
				if r, err := v.VerifyLegacySignature(l, digest, s, o); err == nil && !r.IsImageSignature() {
					t.Fatalf("allowed a legacy signature that is not an image signature: %+v", r)
				}
			}
		}
	})
}

func FuzzVerifyLegacyAttestation(f *testing.F) {
	v := fixtureVerifier(f)
	m := loadImage(f, "fx/keyless-legacy")
	l := m.atts[0]
	f.Add(l.Payload, l.Annotations[CertificateAnnotation], l.Annotations[BundleAnnotation])
	s := Signer{Identities: []Identity{alice}}
	f.Fuzz(func(t *testing.T, env []byte, cert, set string) {
		l := Legacy{Payload: env, Annotations: map[string]string{CertificateAnnotation: cert, BundleAnnotation: set}}
		if r, err := v.VerifyLegacyAttestation(l, m.digest, s, Options{}); err == nil && r.PredicateType == "" {
			t.Fatalf("allowed an attestation without a predicate type: %+v", r)
		}
	})
}

func FuzzParseSETBundle(f *testing.F) {
	f.Add(loadImage(f, "fx/key-tlog-legacy").sigs[0].Annotations[BundleAnnotation])
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseSETBundle(s)
		if err == nil && !e.HasInclusionPromise() {
			t.Fatal("parsed an entry without its SET")
		}
	})
}
