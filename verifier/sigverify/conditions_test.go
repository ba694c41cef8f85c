package sigverify

import (
	"strings"
	"testing"

	"github.com/criguard/criguard/verifier/attest"
)

// TestAttestationConditions: the conditions of issue 10 hold on the verified
// predicates of the real fixtures, and a condition that should not hold denies.
func TestAttestationConditions(t *testing.T) {
	v := fixtureVerifier(t)
	cases := []struct {
		name, repo, typ string
		signer          Signer
		cond            attest.Condition
		want            string // "" = holds
	}{
		{"keyless-bundle SLSA builder id", "fx/keyless-bundle", "slsaprovenance1", Signer{Identities: []Identity{alice}},
			attest.Condition{Key: "{{ runDetails.builder.id }}", Operator: "Equals", Value: "https://example.test/builder@v1"}, ""},
		{"keyless-legacy SLSA builder id (legacy .att)", "fx/keyless-legacy", "slsaprovenance1", Signer{Identities: []Identity{alice}},
			attest.Condition{Key: "{{ runDetails.builder.id }}", Operator: "Equals", Value: "https://example.test/builder@v1"}, ""},
		{"keyless-bundle, another builder", "fx/keyless-bundle", "slsaprovenance1", Signer{Identities: []Identity{alice}},
			attest.Condition{Key: "{{ runDetails.builder.id }}", Operator: "Equals", Value: "https://example.test/builder@v2"}, "does not hold"},
		{"key-attest critical == 0", "fx/key-attest", "vuln", Signer{Key: keyT(t)},
			attest.Condition{Key: "{{ scanner.result.summary.critical }}", Operator: "Equals", Value: 0}, ""},
		{"key-attest critical > 0 is false", "fx/key-attest", "vuln", Signer{Key: keyT(t)},
			attest.Condition{Key: "{{ scanner.result.summary.critical }}", Operator: "GreaterThan", Value: 0}, "does not hold"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			typ, err := attest.PredicateType(c.typ)
			if err != nil {
				t.Fatal(err)
			}
			r, errs := verifyAttestations(v, loadImage(t, c.repo), typ, c.signer, Options{})
			if r == nil {
				t.Fatalf("no %s attestation verifies: %v", c.typ, errs)
			}
			cs, err := attest.Compile([]attest.AnyAllConditions{{All: []attest.Condition{c.cond}}})
			if err != nil {
				t.Fatal(err)
			}
			err = cs.Evaluate(r.Predicate)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("does not hold: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
