package sigverify

import (
	"testing"

	"github.com/criguard/criguard/internal/fixtureregistry"
)

// TestVerdicts agrees with every cell of testdata/sigstore/verdicts.md, which
// records what the real cosign CLI said offline for each image and column.
func TestVerdicts(t *testing.T) {
	v := fixtureVerifier(t)
	k := keyT(t)
	columns := map[string]func(m material) (*Result, []error){
		"alice keyless": func(m material) (*Result, []error) {
			return verifySignatures(v, m, Signer{Identities: []Identity{alice}}, Options{})
		},
		"GitHub workflow": func(m material) (*Result, []error) {
			return verifySignatures(v, m, Signer{Identities: []Identity{github}}, Options{})
		},
		"key t.pub (tlog required)": func(m material) (*Result, []error) {
			return verifySignatures(v, m, Signer{Key: k}, Options{})
		},
		"key t.pub --insecure-ignore-tlog": func(m material) (*Result, []error) {
			return verifySignatures(v, m, Signer{Key: k}, Options{IgnoreTlog: true})
		},
		"alice slsaprovenance1 attestation": func(m material) (*Result, []error) {
			return verifyAttestations(v, m, slsaProvenance1, Signer{Identities: []Identity{alice}}, Options{})
		},
		"t.pub vuln attestation": func(m material) (*Result, []error) {
			return verifyAttestations(v, m, vulnPredicate, Signer{Key: k}, Options{})
		},
	}
	header, rows, err := fixtureregistry.Verdicts(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	cells := 0
	for _, row := range rows {
		repo := row[0]
		m := loadImage(t, repo)
		for i, col := range header[1:] {
			want := row[i+1]
			verify, ok := columns[col]
			if !ok {
				t.Fatalf("verdicts.md column %q has no verification here", col)
			}
			t.Run(repo+"/"+col, func(t *testing.T) {
				r, errs := verify(m)
				got := "fail"
				if r != nil {
					got = "pass"
				}
				t.Logf("%s: %+v %v", got, r, errs)
				if got != want {
					t.Errorf("%s, %s: got %s, verdicts.md says %s; result %+v, errors %v", repo, col, got, want, r, errs)
				}
			})
			cells++
		}
	}
	if cells != 9*6 {
		t.Errorf("checked %d cells, verdicts.md has 54", cells)
	}
}
