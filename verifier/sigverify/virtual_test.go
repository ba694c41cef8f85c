package sigverify

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"
)

// The virtual Sigstore (sigstore-go's pkg/testing/ca) signs at any time we
// choose, which real fixtures cannot: its leaf certificates are valid from now
// for 10 minutes, and the transparency log integrates the entry at `at`.
// Its certificates carry no SCT, so these verifications ignore SCTs.

const (
	vsIssuer  = "http://127.0.0.1:8080"
	vsDigest  = "sha256:0000000000000000000000000000000000000000000000000000000000000abc"
	vsSubject = "alice@example.com"
)

// virtualEntity is what the virtual Sigstore made for one signing.
type virtualEntity struct {
	sig        verify.SignatureContent
	cert       *x509.Certificate
	entries    []*tlog.Entry
	timestamps [][]byte
}

// virtualParts takes a signing's (entity, error) apart, ending the test on
// the error; call it as virtualParts(t)(vs.SignAtTime(...)).
func virtualParts(t *testing.T) func(*ca.TestEntity, error) virtualEntity {
	return func(ent *ca.TestEntity, err error) virtualEntity {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		sc, _ := ent.SignatureContent()
		vc, _ := ent.VerificationContent()
		entries, _ := ent.TlogEntries()
		tss, _ := ent.Timestamps()
		return virtualEntity{sig: sc, cert: vc.Certificate(), entries: entries, timestamps: tss}
	}
}

// virtualLegacy signs a simple-signing payload for vsDigest as a legacy .sig
// layer: certificate, SET bundle (integrated at `at`) and RFC 3161 timestamp.
func virtualLegacy(t *testing.T, vs *ca.VirtualSigstore, at time.Time) Legacy {
	t.Helper()
	payload := []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"example.test/app"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, vsDigest))
	e := virtualParts(t)(vs.SignAtTime(vsSubject, vsIssuer, payload, at))
	setJSON := setAnnotation(t, vs, e.entries[0], at)
	tsJSON, _ := json.Marshal(map[string][]byte{"SignedRFC3161Timestamp": e.timestamps[0]})
	return Legacy{Payload: payload, Annotations: map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(e.sig.Signature()),
		CertificateAnnotation:                pemCert(t, e.cert.Raw),
		BundleAnnotation:                     setJSON,
		TimestampAnnotation:                  string(tsJSON),
	}}
}

// setAnnotation is cosign's Rekor bundle annotation for entry, integrated at
// `at` and signed by the virtual log.
func setAnnotation(t *testing.T, vs *ca.VirtualSigstore, e *tlog.Entry, at time.Time) string {
	t.Helper()
	body := e.TransparencyLogEntry().GetCanonicalizedBody()
	logID := hex.EncodeToString([]byte(e.LogKeyID()))
	set, err := vs.RekorSignPayload(tlog.RekorPayload{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: at.Unix(), LogIndex: e.LogIndex(), LogID: logID})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"SignedEntryTimestamp": set, "Payload": map[string]any{
		"body": body, "integratedTime": at.Unix(), "logIndex": e.LogIndex(), "logID": logID}})
	return string(b)
}

// virtualBundle attests an in-toto statement about vsDigest as a v0.3 bundle
// whose log entry is integrated at `at`.
func virtualBundle(t *testing.T, vs *ca.VirtualSigstore, at time.Time) []byte {
	t.Helper()
	st := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`, strings.TrimPrefix(vsDigest, "sha256:"))
	e := virtualParts(t)(vs.AttestAtTime(vsSubject, vsIssuer, []byte(st), at, true))
	sc, entries, tss := e.sig, e.entries, e.timestamps
	env := sc.EnvelopeContent().RawEnvelope()
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	var set struct{ SignedEntryTimestamp []byte }
	_ = json.Unmarshal([]byte(setAnnotation(t, vs, entries[0], at)), &set)
	tle := entries[0].TransparencyLogEntry()
	tle.KindVersion = &protorekor.KindVersion{Kind: "intoto", Version: "0.0.2"}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set.SignedEntryTimestamp}
	pb := &protobundle.Bundle{
		MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: e.cert.Raw}},
			TlogEntries:               []*protorekor.TransparencyLogEntry{tle},
			TimestampVerificationData: &protobundle.TimestampVerificationData{Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tss[0]}}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: payload, PayloadType: env.PayloadType,
			Signatures: []*protodsse.Signature{{Sig: sc.Signature()}},
		}},
	}
	b, err := protojson.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVirtualSigningTime: a certificate is judged at the time the log entry
// (or the timestamp) proves; an entry integrated after the certificate expired
// denies, the same material integrated within its validity allows.
func TestVirtualSigningTime(t *testing.T) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	v := verifierFor(t, vs)
	s := Signer{Identities: []Identity{{Subject: vsSubject, Issuer: vsIssuer}}}
	noSCT := Options{IgnoreSCT: true}
	within, after := time.Now().Add(5*time.Minute), time.Now().Add(time.Hour)
	cases := []verifyCase{
		{"legacy, logged within validity", func() (*Result, error) {
			return v.VerifyLegacySignature(virtualLegacy(t, vs, within), vsDigest, s, noSCT)
		}, ""},
		{"legacy, logged after the certificate expired", func() (*Result, error) {
			return v.VerifyLegacySignature(virtualLegacy(t, vs, after), vsDigest, s, noSCT)
		}, "outside the validity of the certificate of alice@example.com"},
		{"legacy, SCT required but absent", func() (*Result, error) {
			return v.VerifyLegacySignature(virtualLegacy(t, vs, within), vsDigest, s, Options{})
		}, "embedded SCT does not verify"},
		{"bundle, logged within validity", func() (*Result, error) {
			return v.VerifyBundle(virtualBundle(t, vs, within), vsDigest, s, noSCT)
		}, ""},
		{"bundle, logged after the certificate expired", func() (*Result, error) {
			return v.VerifyBundle(virtualBundle(t, vs, after), vsDigest, s, noSCT)
		}, "a timestamp outside the certificate's validity"},
	}
	runVerifyCases(t, cases)
}
