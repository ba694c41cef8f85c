package attest

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// Kyverno's documented verifyImages attestation conditions, verbatim
// (kyverno.io docs, "Verify Images Rules": vulnerability scan age, and the
// SLSA provenance builder of slsa-github-generator).
const (
	scanAgeConditions = `
- all:
  - key: "{{ time_since('','{{ metadata.scanFinishedOn }}','') }}"
    operator: LessThanOrEquals
    value: "168h"
`
	slsaBuilderConditions = `
- all:
  - key: "{{ regex_match('^https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v[0-9].[0-9].[0-9]$','{{ builder.id}}') }}"
    operator: Equals
    value: true
`
)

// fixturePredicate is the predicate of a Sigstore bundle in
// testdata/sigstore (made by cosign attest; its signature is sigverify's
// concern, its predicate is what a condition judges).
func fixturePredicate(t *testing.T, blob string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "sigstore", "registry", "blobs", "sha256", blob))
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		DSSE struct {
			Payload string `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(bundle.DSSE.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var statement struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(payload, &statement); err != nil {
		t.Fatal(err)
	}
	return statement.Predicate
}

const (
	// fx/key-attest's vuln predicate: scanFinishedOn 2026-11-30T00:01:00Z.
	vulnFixtureBlob = "344e79ceb38063a35758720abec71c60a50f10675054b1378f568150b7eb6ce9"
	// fx/keyless-bundle's SLSA v1 provenance: builder https://example.test/builder@v1.
	slsaFixtureBlob = "34e4010332a6d4fca065d6c244b236ae1a9e51bdaf2f660b9b63650e3f681e3e"
)

// slsa02 is a SLSA v0.2 predicate as slsa-github-generator writes it (the
// shape Kyverno's example reads: builder.id).
func slsa02(builderID string) []byte {
	return []byte(`{"builder":{"id":"` + builderID + `"},"buildType":"https://github.com/slsa-framework/slsa-github-generator/container@v1"}`)
}

func TestKyvernoDocumentedExamples(t *testing.T) {
	scanned := time.Date(2026, 11, 30, 0, 1, 0, 0, time.UTC)
	const gen = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml"
	cases := []struct {
		name, conditions string
		now              time.Time
		predicate        []byte
		want             string // "" = holds
	}{
		{"scan age: a day old", scanAgeConditions, scanned.Add(24 * time.Hour), fixturePredicate(t, vulnFixtureBlob), ""},
		{"scan age: exactly 168h", scanAgeConditions, scanned.Add(168 * time.Hour), fixturePredicate(t, vulnFixtureBlob), ""},
		{"scan age: a second too old", scanAgeConditions, scanned.Add(168*time.Hour + time.Second), fixturePredicate(t, vulnFixtureBlob), `the key is "168h0m1s"`},
		{"scan age: no scan time", scanAgeConditions, scanned, []byte(`{"metadata":{}}`), "finds nothing"},
		{"scan age: not a time", scanAgeConditions, scanned, []byte(`{"metadata":{"scanFinishedOn":"yesterday"}}`), "cannot parse"},
		{"SLSA builder: a tagged generator", slsaBuilderConditions, scanned, slsa02(gen + "@refs/tags/v1.9.0"), ""},
		{"SLSA builder: a branch", slsaBuilderConditions, scanned, slsa02(gen + "@refs/heads/main"), "does not hold"},
		{"SLSA builder: another builder", slsaBuilderConditions, scanned, slsa02("https://example.test/builder@v1"), "does not hold"},
		// The example reads SLSA v0.2's builder.id; a v1 provenance keeps it
		// under runDetails, so it finds nothing there: a denial.
		{"SLSA builder: a v1 provenance", slsaBuilderConditions, scanned, fixturePredicate(t, slsaFixtureBlob), "finds nothing"},
		{"SLSA v1 builder, the example adapted", strings.NewReplacer(
			"^https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v[0-9].[0-9].[0-9]$", "^https://example.test/builder@v[0-9]$",
			"builder.id", "runDetails.builder.id").Replace(slsaBuilderConditions), scanned, fixturePredicate(t, slsaFixtureBlob), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var blocks []AnyAllConditions
			if err := yaml.UnmarshalStrict([]byte(c.conditions), &blocks); err != nil {
				t.Fatal(err)
			}
			cs, err := Compile(blocks, WithClock(func() time.Time { return c.now }))
			if err != nil {
				t.Fatal(err)
			}
			err = cs.Evaluate(c.predicate)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("does not hold: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
