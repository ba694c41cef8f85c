package sigformat_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/sigformat"
)

// fixtureFiles returns every manifest and blob of the cosign fixture dump.
func fixtureFiles(f *testing.F) [][]byte {
	f.Helper()
	dir, err := fixtureregistry.Dir(fixtureregistry.Cosign)
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	err = filepath.WalkDir(filepath.Join(dir, "registry"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if fi, _ := d.Info(); fi != nil && fi.Size() > 64<<10 {
			return nil // image layers: not registry metadata
		}
		b, err := os.ReadFile(p)
		if err == nil {
			out = append(out, b)
		}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	return out
}

func FuzzParseManifest(f *testing.F) {
	for _, b := range fixtureFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := sigformat.ParseManifest(b)
		if err == nil {
			for _, l := range m.Layers {
				if !strings.HasPrefix(l.Digest, "sha256:") || l.Size < 0 {
					t.Fatalf("accepted layer %+v", l)
				}
			}
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	for _, b := range fixtureFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := sigformat.ParseIndex(b)
		if err == nil && len(ix.Manifests) > sigformat.MaxEntries {
			t.Fatal("unbounded index accepted")
		}
	})
}

func FuzzParseSimpleSigning(f *testing.F) {
	for _, b := range fixtureFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := sigformat.ParseSimpleSigning(b)
		if err == nil && len(p.Critical.Image.DockerManifestDigest) != 71 {
			t.Fatalf("accepted digest %q", p.Critical.Image.DockerManifestDigest)
		}
	})
}

func FuzzDecodeSignature(f *testing.F) {
	f.Add("MEYCIQClR71NdLC7QL8y6MSCPUqjn4gOeABr4D0lAr4DIzyopAIhALHUDwyUhX+bpHLWw/XerMnqPdWAmL+O9tegZdW47Dpf")
	f.Add("")
	f.Add("====")
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := sigformat.DecodeSignature(s)
		if err == nil && (len(sig) == 0 || len(sig) > sigformat.MaxSignatureSize) {
			t.Fatalf("accepted %d-byte signature", len(sig))
		}
	})
}

func FuzzParseBundle(f *testing.F) {
	for _, b := range fixtureFiles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bn, err := sigformat.ParseBundle(b)
		if err != nil {
			return
		}
		env := bn.GetDsseEnvelope()
		if env == nil || len(env.GetSignatures()) == 0 {
			t.Fatal("accepted a bundle without DSSE signatures")
		}
		_, _ = sigformat.ParseStatement(env.GetPayloadType(), env.GetPayload())
	})
}

func FuzzParseStatement(f *testing.F) {
	for _, b := range fixtureFiles(f) {
		if bn, err := sigformat.ParseBundle(b); err == nil {
			f.Add(bn.GetDsseEnvelope().GetPayloadType(), bn.GetDsseEnvelope().GetPayload())
		}
	}
	f.Add(sigformat.InTotoPayloadType, []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"AB"}}]}`))
	f.Fuzz(func(t *testing.T, pt string, b []byte) {
		st, err := sigformat.ParseStatement(pt, b)
		if err != nil {
			return
		}
		if len(st.Subject) == 0 || len(st.Subject) > sigformat.MaxSubjects {
			t.Fatalf("accepted %d subjects", len(st.Subject))
		}
		for _, d := range st.SubjectDigests() {
			if !st.HasSubject(d) {
				t.Fatalf("HasSubject(%q) false for its own subject", d)
			}
		}
	})
}
