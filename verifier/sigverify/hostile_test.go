package sigverify

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/criguard/criguard/verifier/trust"
)

// with returns a copy of l whose annotations are changed by set ("" deletes).
func with(l Legacy, set map[string]string) Legacy {
	a := map[string]string{}
	for k, v := range l.Annotations {
		a[k] = v
	}
	for k, v := range set {
		if v == "" {
			delete(a, k)
		} else {
			a[k] = v
		}
	}
	return Legacy{Payload: l.Payload, Annotations: a}
}

// editJSON decodes b, lets edit change it, and re-encodes it.
func editJSON(t *testing.T, b []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// signatureBundle returns the image's bundle whose predicate is cosign's
// signature (not the attestation).
func signatureBundle(t *testing.T, v *Verifier, m material, s Signer) []byte {
	t.Helper()
	for _, b := range m.bundles {
		if r, err := v.VerifyBundle(b, m.digest, s, Options{}); err == nil && r.IsImageSignature() {
			return b
		}
	}
	t.Fatalf("%s: no signature bundle verifies", m.digest)
	return nil
}

// expiredCAs is the fixture root whose Fulcio CAs stopped being valid before
// the fixtures were signed (2026-12-01T06:57Z).
type expiredCAs struct{ root.TrustedMaterial }

func (e expiredCAs) FulcioCertificateAuthorities() []root.CertificateAuthority {
	var out []root.CertificateAuthority
	for _, ca := range e.TrustedMaterial.FulcioCertificateAuthorities() {
		c := *ca.(*root.FulcioCertificateAuthority)
		c.ValidityPeriodEnd = time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
		out = append(out, &c)
	}
	return out
}

func TestHostileInputs(t *testing.T) {
	v := fixtureVerifier(t)
	tr, err := trust.LoadFile(filepath.Join(fixtureDir, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	k := keyT(t)
	tpub, err := os.ReadFile(filepath.Join(fixtureDir, "keys", "t.pub"))
	if err != nil {
		t.Fatal(err)
	}
	override := func(o trust.Overrides) *Verifier {
		tm, err := trust.Apply(tr, o)
		if err != nil {
			t.Fatal(err)
		}
		return verifierFor(t, tm)
	}
	aliceS := Signer{Identities: []Identity{alice}}
	keyS := Signer{Key: k}

	kl := loadImage(t, "fx/keyless-legacy")
	ktl := loadImage(t, "fx/key-tlog-legacy")
	kb := loadImage(t, "fx/keyless-bundle")
	unsigned := loadImage(t, "fx/unsigned")
	kbSig := signatureBundle(t, v, kb, aliceS)
	klSig, klAtt, ktlSig := kl.sigs[0], kl.atts[0], ktl.sigs[0]
	certPEM := klSig.Annotations[CertificateAnnotation]

	tamperedSET := editJSON(t, []byte(ktlSig.Annotations[BundleAnnotation]), func(m map[string]any) {
		set, _ := base64.StdEncoding.DecodeString(m["SignedEntryTimestamp"].(string))
		set[len(set)-3] ^= 1
		m["SignedEntryTimestamp"] = base64.StdEncoding.EncodeToString(set)
	})
	elevenCerts := strings.Repeat(certPEM, 11)
	chainBundle := editJSON(t, kbSig, func(m map[string]any) {
		vm := m["verificationMaterial"].(map[string]any)
		c := vm["certificate"]
		delete(vm, "certificate")
		var certs []any
		for range 11 {
			certs = append(certs, c)
		}
		vm["x509CertificateChain"] = map[string]any{"certificates": certs}
	})
	hugeAtt := editJSON(t, klAtt.Payload, func(m map[string]any) {
		m["payload"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte(" "), MaxEnvelopeSize))
	})

	own := ownOverrides(t, tr)
	onlyOverrides, err := trust.Apply(nil, own)
	if err != nil {
		t.Fatal(err)
	}
	ov := verifierFor(t, onlyOverrides)

	cases := []verifyCase{
		{"trust from Kyverno-style overrides alone (the fixture's own keys), bundle", func() (*Result, error) {
			return ov.VerifyBundle(kbSig, kb.digest, aliceS, Options{})
		}, ""},
		{"trust from Kyverno-style overrides alone, legacy keyless with RFC 3161 timestamp", func() (*Result, error) {
			return ov.VerifyLegacySignature(klSig, kl.digest, aliceS, Options{})
		}, ""},
		{"trust from Kyverno-style overrides alone, legacy key with SET", func() (*Result, error) {
			return ov.VerifyLegacySignature(ktlSig, ktl.digest, keyS, Options{})
		}, ""},
		{"another identity (bob for alice)", func() (*Result, error) {
			bob := loadImage(t, "fx/keyless-bob")
			return v.VerifyBundle(bob.bundles[0], bob.digest, aliceS, Options{})
		}, `signed by bob@example.com (issuer http://127.0.0.1:8080), another identity than the policy's (subject "alice@example.com"`},
		{"GitHub workflow identity with another ref", func() (*Result, error) {
			gh := loadImage(t, "fx/github-main")
			id := github
			id.Extensions.GithubWorkflowRef = "refs/heads/dev"
			return v.VerifyBundle(gh.bundles[0], gh.digest, Signer{Identities: []Identity{id}}, Options{})
		}, "another identity than the policy's"},
		{"GitHub workflow identity: trigger, sha, name, repository and ref all match", func() (*Result, error) {
			gh := loadImage(t, "fx/github-main")
			id := github
			id.Extensions.GithubWorkflowTrigger, id.Extensions.GithubWorkflowSHA = "push", "0123456789abcdef0123456789abcdef01234567"
			id.Extensions.GithubWorkflowName, id.Extensions.GithubWorkflowRepository = "release", "example/app"
			return v.VerifyBundle(gh.bundles[0], gh.digest, Signer{Identities: []Identity{id}}, Options{})
		}, ""},
		{"any one of several identities", func() (*Result, error) {
			bob := Identity{Subject: "bob@example.com", Issuer: alice.Issuer}
			return v.VerifyBundle(kbSig, kb.digest, Signer{Identities: []Identity{bob, github, alice}}, Options{})
		}, ""},
		{"subject regexp is unanchored, as in cosign", func() (*Result, error) {
			return v.VerifyBundle(kbSig, kb.digest, Signer{Identities: []Identity{{SubjectRegExp: "@example\\.com$", IssuerRegExp: "^http://127\\.0\\.0\\.1:"}}}, Options{})
		}, ""},
		{"keyless legacy, log ignored, RFC 3161 timestamp proves the time", func() (*Result, error) {
			return v.VerifyLegacySignature(klSig, kl.digest, aliceS, Options{IgnoreTlog: true})
		}, ""},
		{"keyless legacy, log ignored, no timestamp", func() (*Result, error) {
			return v.VerifyLegacySignature(with(klSig, map[string]string{TimestampAnnotation: ""}), kl.digest, aliceS, Options{IgnoreTlog: true})
		}, "no RFC 3161 timestamp from a trusted timestamp authority proves when the short-lived certificate was used"},
		{"expired CA chain at the signing time", func() (*Result, error) {
			ev, _ := New(expiredCAs{tr})
			return ev.VerifyBundle(kbSig, kb.digest, aliceS, Options{})
		}, "does not chain to a trusted Fulcio CA at the time the signature is proven to have been made"},
		{"keyless.roots override with another root", func() (*Result, error) {
			tsaRoot := pemCert(t, tr.TimestampingAuthorities()[0].(*root.SigstoreTimestampingAuthority).Root.Raw)
			return override(trust.Overrides{FulcioRoots: tsaRoot}).VerifyBundle(kbSig, kb.digest, aliceS, Options{})
		}, "does not chain to a trusted Fulcio CA"},
		{"SET entry of another signature's payload (legacy)", func() (*Result, error) {
			return v.VerifyLegacySignature(with(klSig, map[string]string{BundleAnnotation: ktlSig.Annotations[BundleAnnotation]}), kl.digest, aliceS, Options{})
		}, "records a payload with sha256 " + sha256Hex(ktlSig.Payload) + ", not this signature's payload"},
		{"entry recording another signature over this payload", func() (*Result, error) {
			other := editJSON(t, []byte(klSig.Annotations[BundleAnnotation]), func(m map[string]any) {})
			return v.VerifyLegacySignature(with(klSig, map[string]string{BundleAnnotation: string(other), "dev.cosignproject.cosign/signature": ktlSig.Annotations["dev.cosignproject.cosign/signature"]}), kl.digest, aliceS, Options{})
		}, "the transparency-log entry records another signature than this one"},
		{"bundle entry of another payload", func() (*Result, error) {
			var att []byte
			for _, b := range kb.bundles {
				if !bytes.Equal(b, kbSig) {
					att = b
				}
			}
			var a map[string]any
			_ = json.Unmarshal(att, &a)
			mixed := editJSON(t, kbSig, func(m map[string]any) {
				m["verificationMaterial"].(map[string]any)["tlogEntries"] = a["verificationMaterial"].(map[string]any)["tlogEntries"]
			})
			return v.VerifyBundle(mixed, kb.digest, aliceS, Options{})
		}, "it is an entry for another signature or image"},
		{"legacy signature for another digest", func() (*Result, error) {
			return v.VerifyLegacySignature(ktlSig, unsigned.digest, keyS, Options{})
		}, "but for image " + ktl.digest + ", not " + unsigned.digest + ": a signature for another digest"},
		{"bundle for another digest", func() (*Result, error) {
			return v.VerifyBundle(kbSig, unsigned.digest, aliceS, Options{})
		}, "the in-toto statement is about " + kb.digest + ", not " + unsigned.digest},
		{"legacy attestation for another digest", func() (*Result, error) {
			return v.VerifyLegacyAttestation(klAtt, unsigned.digest, aliceS, Options{})
		}, "the in-toto statement is about " + kl.digest + ", not " + unsigned.digest},
		{"tampered payload", func() (*Result, error) {
			l := Legacy{Payload: append(bytes.Clone(ktlSig.Payload), ' '), Annotations: ktlSig.Annotations}
			return v.VerifyLegacySignature(l, ktl.digest, keyS, Options{})
		}, "not this signature's payload"},
		{"tampered payload, log ignored", func() (*Result, error) {
			l := Legacy{Payload: append(bytes.Clone(ktlSig.Payload), ' '), Annotations: ktlSig.Annotations}
			return v.VerifyLegacySignature(l, ktl.digest, keyS, Options{IgnoreTlog: true})
		}, "the signature does not verify with key"},
		{"SET by an untrusted log key", func() (*Result, error) {
			return override(trust.Overrides{RekorPubKey: string(tpub)}).VerifyLegacySignature(ktlSig, ktl.digest, keyS, Options{})
		}, "a transparency log the trusted root does not list (an untrusted log key)"},
		{"SET that does not verify", func() (*Result, error) {
			return v.VerifyLegacySignature(with(ktlSig, map[string]string{BundleAnnotation: string(tamperedSET)}), ktl.digest, keyS, Options{})
		}, "its SET does not verify with the trusted key of log"},
		{"SCT from an untrusted CT log", func() (*Result, error) {
			return override(trust.Overrides{CTLogPubKey: string(tpub)}).VerifyBundle(kbSig, kb.digest, aliceS, Options{})
		}, "embedded SCT does not verify against any trusted CT log"},
		{"SCT from an untrusted CT log, SCT ignored", func() (*Result, error) {
			return override(trust.Overrides{CTLogPubKey: string(tpub)}).VerifyBundle(kbSig, kb.digest, aliceS, Options{IgnoreSCT: true})
		}, ""},
		{"oversized legacy chain", func() (*Result, error) {
			return v.VerifyLegacySignature(with(klSig, map[string]string{ChainAnnotation: elevenCerts}), kl.digest, aliceS, Options{})
		}, "annotation dev.sigstore.cosign/chain: too many certificates"},
		{"bundle with a certificate chain (v0.3 allows one certificate)", func() (*Result, error) {
			return v.VerifyBundle(chainBundle, kb.digest, aliceS, Options{})
		}, "verification material cannot be X.509 certificate chain"},
		{"oversized legacy attestation", func() (*Result, error) {
			return v.VerifyLegacyAttestation(Legacy{Payload: hugeAtt, Annotations: klAtt.Annotations}, kl.digest, aliceS, Options{})
		}, "the attestation envelope is"},
		{"oversized bundle", func() (*Result, error) {
			return v.VerifyBundle(append(bytes.Clone(kbSig), bytes.Repeat([]byte(" "), MaxBundleSize)...), kb.digest, aliceS, Options{})
		}, "larger than the 1048576-byte limit"},
		{"SET entry body without apiVersion (rekor panics on it)", func() (*Result, error) {
			noVersion := editJSON(t, []byte(ktlSig.Annotations[BundleAnnotation]), func(m map[string]any) {
				p := m["Payload"].(map[string]any)
				body, _ := base64.StdEncoding.DecodeString(p["body"].(string))
				p["body"] = base64.StdEncoding.EncodeToString(bytes.Replace(body, []byte(`"apiVersion"`), []byte(`"apiVersioX"`), 1))
			})
			return v.VerifyLegacySignature(with(ktlSig, map[string]string{BundleAnnotation: string(noVersion)}), ktl.digest, keyS, Options{})
		}, "malformed material made the Sigstore library fail"},
		{"bundle entry body without apiVersion (rekor panics on it)", func() (*Result, error) {
			kbk := loadImage(t, "fx/key-tlog-bundle")
			b := editJSON(t, kbk.bundles[0], func(m map[string]any) {
				e := m["verificationMaterial"].(map[string]any)["tlogEntries"].([]any)[0].(map[string]any)
				raw, _ := base64.StdEncoding.DecodeString(e["canonicalizedBody"].(string))
				e["canonicalizedBody"] = base64.StdEncoding.EncodeToString(bytes.Replace(raw, []byte(`"apiVersion"`), []byte(`"apiVersioX"`), 1))
			})
			return v.VerifyBundle(b, kbk.digest, keyS, Options{})
		}, "malformed material made the Sigstore library fail"},
		{"key signature under a keyless policy", func() (*Result, error) {
			return v.VerifyLegacySignature(ktlSig, ktl.digest, aliceS, Options{})
		}, "signed with a key, not with a keyless certificate"},
		{"keyless signature under a key policy", func() (*Result, error) {
			return v.VerifyBundle(kbSig, kb.digest, keyS, Options{})
		}, "signed keyless by alice@example.com (issuer http://127.0.0.1:8080), not with key"},
	}
	runVerifyCases(t, cases)
}

func pemCert(t *testing.T, der []byte) string {
	t.Helper()
	return "-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END CERTIFICATE-----\n"
}

// ownOverrides spells the fixture root's own keys and chains as Kyverno's
// override fields (PEM).
func ownOverrides(t *testing.T, tr *root.TrustedRoot) trust.Overrides {
	t.Helper()
	var o trust.Overrides
	for _, l := range tr.RekorLogs() {
		p, _ := cryptoutils.MarshalPublicKeyToPEM(l.PublicKey)
		o.RekorPubKey = string(p)
	}
	for _, l := range tr.CTLogs() {
		p, _ := cryptoutils.MarshalPublicKeyToPEM(l.PublicKey)
		o.CTLogPubKey = string(p)
	}
	tsa := tr.TimestampingAuthorities()[0].(*root.SigstoreTimestampingAuthority)
	chain, _ := cryptoutils.MarshalCertificatesToPEM(append(append([]*x509.Certificate{tsa.Leaf}, tsa.Intermediates...), tsa.Root))
	o.TSACertChain = string(chain)
	ca := tr.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	roots, _ := cryptoutils.MarshalCertificatesToPEM(append(ca.Intermediates, ca.Root))
	o.FulcioRoots = string(roots)
	return o
}
