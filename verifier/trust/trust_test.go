package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

var fixtureRoot = filepath.Join("..", "..", "testdata", "sigstore", "trusted_root.json")

func TestLoadFixtureRoot(t *testing.T) {
	tr, err := LoadFile(fixtureRoot)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tr.FulcioCertificateAuthorities()); n != 1 {
		t.Errorf("%d Fulcio CAs, want 1", n)
	}
	if _, ok := tr.RekorLogs()["4aa8471318ff6e031353e0ca46ef3ac0b3dadb66a13ec408ecdc59b4fe48743d"]; !ok {
		t.Errorf("Rekor log of the fixtures' SETs missing: %v", tr.RekorLogs())
	}
	if len(tr.CTLogs()) != 1 || len(tr.TimestampingAuthorities()) != 1 {
		t.Errorf("%d CT logs, %d TSAs; want 1 and 1", len(tr.CTLogs()), len(tr.TimestampingAuthorities()))
	}
}

func TestPublicGood(t *testing.T) {
	tr, err := PublicGood()
	if err != nil {
		t.Fatal(err)
	}
	// rekor.sigstore.dev's log ID, as every public-good Rekor v1 entry names it.
	if _, ok := tr.RekorLogs()["c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"]; !ok {
		t.Errorf("public-good Rekor log missing")
	}
	if len(tr.FulcioCertificateAuthorities()) < 1 || len(tr.CTLogs()) < 1 || len(tr.TimestampingAuthorities()) < 1 {
		t.Errorf("public-good root incomplete")
	}
}

func TestParseRefuses(t *testing.T) {
	good, err := os.ReadFile(fixtureRoot)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":            nil,
		"not JSON":         []byte("{"),
		"unknown field":    bytes.Replace(good, []byte(`"tlogs"`), []byte(`"surprise": 1, "tlogs"`), 1),
		"wrong media type": bytes.Replace(good, []byte("trustedroot+json;version=0.1"), []byte("trustedroot+json;version=9"), 1),
		"trusts nothing":   []byte(`{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`),
		"oversized":        append(bytes.Clone(good), bytes.Repeat([]byte(" "), MaxRootSize)...),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(data); err == nil {
				t.Fatal("parsed")
			} else {
				t.Log(err)
			}
		})
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "none.json")); err == nil || !strings.Contains(err.Error(), "none.json") {
		t.Errorf("missing file: %v", err)
	}
}

// FixturePEM returns the fixture root's parts as the PEM texts Kyverno's
// override fields take.
func fixturePEM(t *testing.T, tr *root.TrustedRoot) Overrides {
	t.Helper()
	var o Overrides
	for _, l := range tr.RekorLogs() {
		p, err := cryptoutils.MarshalPublicKeyToPEM(l.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		o.RekorPubKey = string(p)
	}
	for _, l := range tr.CTLogs() {
		p, _ := cryptoutils.MarshalPublicKeyToPEM(l.PublicKey)
		o.CTLogPubKey = string(p)
	}
	tsa := tr.TimestampingAuthorities()[0].(*root.SigstoreTimestampingAuthority)
	o.TSACertChain = pemCerts(t, append(append([]*x509.Certificate{tsa.Leaf}, tsa.Intermediates...), tsa.Root)...)
	ca := tr.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	o.FulcioRoots = pemCerts(t, append(ca.Intermediates, ca.Root)...)
	return o
}

func pemCerts(t *testing.T, certs ...*x509.Certificate) string {
	t.Helper()
	p, err := cryptoutils.MarshalCertificatesToPEM(certs)
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

func TestApply(t *testing.T) {
	tr, err := LoadFile(fixtureRoot)
	if err != nil {
		t.Fatal(err)
	}
	if tm, err := Apply(tr, Overrides{}); err != nil || tm != root.TrustedMaterial(tr) {
		t.Fatalf("no overrides: %v, %v", tm, err)
	}
	o := fixturePEM(t, tr)
	tm, err := Apply(nil, o)
	if err != nil {
		t.Fatal(err)
	}
	// Override log IDs are computed as the logs' own: the same map keys.
	for name, got := range map[string]map[string]*root.TransparencyLog{"rekor": tm.RekorLogs(), "ct": tm.CTLogs()} {
		want := tr.RekorLogs()
		if name == "ct" {
			want = tr.CTLogs()
		}
		for id := range want {
			if _, ok := got[id]; !ok || len(got) != 1 {
				t.Errorf("%s override: log IDs %v, want only %s", name, keysOf(got), id)
			}
		}
	}
	if n := len(tm.FulcioCertificateAuthorities()); n != 1 {
		t.Errorf("%d CAs", n)
	}
	if n := len(tm.TimestampingAuthorities()); n != 1 {
		t.Errorf("%d TSAs", n)
	}
	// A part not overridden comes from the base.
	partial, err := Apply(tr, Overrides{RekorPubKey: o.CTLogPubKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(partial.CTLogs()) != 1 || len(partial.FulcioCertificateAuthorities()) != 1 {
		t.Error("base parts lost")
	}
	der, _ := x509.MarshalPKIXPublicKey(tr.CTLogs()[keysOf(tr.CTLogs())[0]].PublicKey)
	sum := sha256.Sum256(der)
	if _, ok := partial.RekorLogs()[hex.EncodeToString(sum[:])]; !ok || len(partial.RekorLogs()) != 1 {
		t.Error("rekor override did not replace the base's logs")
	}
}

func TestApplyRefuses(t *testing.T) {
	tr, err := LoadFile(fixtureRoot)
	if err != nil {
		t.Fatal(err)
	}
	o := fixturePEM(t, tr)
	leafOnly := pemCerts(t, tr.TimestampingAuthorities()[0].(*root.SigstoreTimestampingAuthority).Leaf)
	cases := map[string]Overrides{
		"rekor key not PEM":       {RekorPubKey: "not a key"},
		"ct key is a certificate": {CTLogPubKey: o.FulcioRoots},
		"tsa chain of one":        {TSACertChain: leafOnly},
		"roots without a root":    {FulcioRoots: leafOnly},
		"roots not PEM":           {FulcioRoots: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
		"too many roots":          {FulcioRoots: strings.Repeat(o.FulcioRoots, MaxChainCerts+1)},
		"oversized key":           {RekorPubKey: strings.Repeat(" ", MaxOverridePEM+1)},
	}
	for name, ov := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Apply(tr, ov); err == nil {
				t.Fatal("applied")
			} else {
				t.Log(err)
			}
		})
	}
}

func keysOf(m map[string]*root.TransparencyLog) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func FuzzParse(f *testing.F) {
	good, err := os.ReadFile(fixtureRoot)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Parse(data)
		if err == nil && len(tr.FulcioCertificateAuthorities())+len(tr.RekorLogs())+len(tr.TimestampingAuthorities()) == 0 {
			t.Fatal("parsed a root that trusts nothing")
		}
	})
}

func FuzzApply(f *testing.F) {
	f.Add("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE80rSZReOT89bNNEvE/4mDpa9V8+LTcOWAtjQYjNdtyLD7XQnuYtvXnLc9skYURHigiizM9PV2l1/CW2eunyTqA==\n-----END PUBLIC KEY-----\n", "x")
	f.Fuzz(func(t *testing.T, key, certs string) {
		_, _ = Apply(nil, Overrides{RekorPubKey: key, CTLogPubKey: key, TSACertChain: certs, FulcioRoots: certs})
	})
}
