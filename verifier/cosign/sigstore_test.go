package cosign_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/attest"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/keys"
	"github.com/criguard/criguard/verifier/sigverify"
	"github.com/criguard/criguard/verifier/trust"
)

// The identities of testdata/sigstore/verdicts.md's columns.
var (
	alice  = sigverify.Identity{Subject: "alice@example.com", Issuer: "http://127.0.0.1:8080"}
	github = func() sigverify.Identity {
		id := sigverify.Identity{SubjectRegExp: "^https://github.com/example/app/", Issuer: "http://localhost:8080"}
		id.Extensions.GithubWorkflowRef = "refs/heads/main"
		return id
	}()
)

// sigstoreColumns turns each verdicts.md column into the Request `cosign
// verify` / `cosign verify-attestation` would make.
func sigstoreColumns(t *testing.T, reg *fixtureregistry.Registry) map[string]cosign.Request {
	t.Helper()
	k, err := keys.LoadFile(reg.Key("t"), "")
	if err != nil {
		t.Fatal(err)
	}
	slsa, _ := attest.PredicateType("slsaprovenance1")
	vuln, _ := attest.PredicateType("vuln")
	return map[string]cosign.Request{
		"alice keyless":                     {Attestors: []cosign.Attestor{{Identities: []sigverify.Identity{alice}}}},
		"GitHub workflow":                   {Attestors: []cosign.Attestor{{Identities: []sigverify.Identity{github}}}},
		"key t.pub (tlog required)":         {Attestors: cosign.KeyAttestors(false, k)},
		"key t.pub --insecure-ignore-tlog":  {Attestors: cosign.KeyAttestors(true, k)},
		"alice slsaprovenance1 attestation": {Attestors: []cosign.Attestor{{Identities: []sigverify.Identity{alice}}}, Attestation: &cosign.Attestation{PredicateType: slsa}},
		"t.pub vuln attestation":            {Attestors: cosign.KeyAttestors(false, k), Attestation: &cosign.Attestation{PredicateType: vuln}},
	}
}

// TestSigstoreVerdicts: cosign.Verify, reading the fixtures from a registry
// with and without the referrers API, agrees with every cell of
// testdata/sigstore/verdicts.md (the real cosign CLI's verdicts).
func TestSigstoreVerdicts(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, referrers, nil)
		root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
		if err != nil {
			t.Fatal(err)
		}
		cols := sigstoreColumns(t, reg)
		header, rows, err := fixtureregistry.Verdicts(reg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		v := newVerifier(nil, cosign.Options{})
		cells := 0
		for _, row := range rows {
			for i, col := range header[1:] {
				req, ok := cols[col]
				if !ok {
					t.Fatalf("verdicts.md column %q has no request here", col)
				}
				req.Image, req.Trust = mustRef(t, reg.Ref(row[0], "1.0")), root
				res, err := v.Verify(context.Background(), req)
				if err != nil {
					t.Fatalf("%s, %s: %v", row[0], col, err)
				}
				got := map[bool]string{true: "pass", false: "fail"}[res.Allowed]
				if got != row[i+1] {
					t.Errorf("referrers=%v %s, %s: %s, verdicts.md says %s; reason: %s", referrers, row[0], col, got, row[i+1], res.Reason)
				}
				if res.Allowed == (res.Reason != "") || res.Allowed && len(res.Verified) == 0 {
					t.Errorf("%s, %s: allowed=%v with reason %q and %d verified", row[0], col, res.Allowed, res.Reason, len(res.Verified))
				}
				cells++
			}
		}
		if cells != 54 {
			t.Errorf("checked %d cells, verdicts.md has 54", cells)
		}
	}
}

// TestSigstoreReasons: denials name what is missing.
func TestSigstoreReasons(t *testing.T) {
	reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, false, nil)
	root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	cols := sigstoreColumns(t, reg)
	cases := []struct{ repo, col, reason string }{
		{"fx/key-no-tlog", "key t.pub (tlog required)", "no transparency-log entry"},
		{"fx/keyless-bob", "alice keyless", "another identity than the policy's"},
		{"fx/unsigned", "alice keyless", "no cosign signatures found"},
		{"fx/keyless-bundle", "t.pub vuln attestation", "attestation"},
	}
	v := newVerifier(nil, cosign.Options{})
	for _, c := range cases {
		req := cols[c.col]
		req.Image, req.Trust = mustRef(t, reg.Ref(c.repo, "1.0")), root
		res, err := v.Verify(context.Background(), req)
		if err != nil || res.Allowed || !strings.Contains(res.Reason, c.reason) {
			t.Errorf("%s, %s: allowed=%v err=%v reason %q, want a denial with %q", c.repo, c.col, res.Allowed, err, res.Reason, c.reason)
		}
		t.Logf("%s, %s: %s", c.repo, c.col, res.Reason)
	}
}

// TestAttestationConditions: the tests: fx/keyless-bundle's SLSA
// provenance passes a condition on its builder id, fx/key-attest passes
// critical == 0; the opposite conditions deny.
func TestAttestationConditions(t *testing.T) {
	reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, true, nil)
	root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.LoadFile(reg.Key("t"), "")
	if err != nil {
		t.Fatal(err)
	}
	cond := func(key, op string, value any) *attest.Conditions {
		c, err := attest.Compile([]attest.AnyAllConditions{{All: []attest.Condition{{Key: key, Operator: op, Value: value}}}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	slsa, _ := attest.PredicateType("slsaprovenance1")
	vuln, _ := attest.PredicateType("vuln")
	aliceA := []cosign.Attestor{{Identities: []sigverify.Identity{alice}}}
	cases := []struct {
		repo      string
		attestors []cosign.Attestor
		att       cosign.Attestation
		allowed   bool
	}{
		{"fx/keyless-bundle", aliceA, cosign.Attestation{PredicateType: slsa, Conditions: cond("{{ runDetails.builder.id }}", "Equals", "https://example.test/builder@v1")}, true},
		{"fx/keyless-bundle", aliceA, cosign.Attestation{PredicateType: slsa, Conditions: cond("{{ runDetails.builder.id }}", "Equals", "https://evil.test/builder")}, false},
		{"fx/keyless-legacy", aliceA, cosign.Attestation{PredicateType: slsa, Conditions: cond("{{ runDetails.builder.id }}", "Equals", "https://example.test/builder@v1")}, true},
		{"fx/key-attest", cosign.KeyAttestors(false, k), cosign.Attestation{PredicateType: vuln, Conditions: cond("{{ scanner.result.summary.critical }}", "Equals", 0)}, true},
		{"fx/key-attest", cosign.KeyAttestors(false, k), cosign.Attestation{PredicateType: vuln, Conditions: cond("{{ scanner.result.summary.critical }}", "GreaterThan", 0)}, false},
	}
	v := newVerifier(nil, cosign.Options{})
	for _, c := range cases {
		att := c.att
		res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(c.repo, "1.0")), Trust: root, Attestors: c.attestors, Attestation: &att})
		if err != nil || res.Allowed != c.allowed {
			t.Errorf("%s: allowed=%v err=%v, want %v; reason %s", c.repo, res.Allowed, err, c.allowed, res.Reason)
		}
		t.Logf("%s: %v %s %+v", c.repo, res.Allowed, res.Reason, res.Verified)
	}
}

// TestSigstoreRoundTrips reports (and bounds) the registry requests of one
// cold keyless or Rekor-backed verification by tag: discovery is the same as
// for key signatures, the Sigstore checks are offline.
func TestSigstoreRoundTrips(t *testing.T) {
	cases := []struct {
		repo, col string
		referrers bool
		max       int64
	}{
		// With the referrers API, cosign's predicate-type label on each
		// referrer lets the attestation bundle go unread: as a key bundle.
		{"fx/keyless-bundle", "alice keyless", true, 5},
		// The fallback tag's index has no labels: both bundles are read.
		{"fx/keyless-bundle", "alice keyless", false, 8},
		{"fx/keyless-legacy", "alice keyless", false, 5},
		{"fx/key-tlog-legacy", "key t.pub (tlog required)", false, 5},
		{"fx/keyless-bundle", "alice slsaprovenance1 attestation", true, 5},
		{"fx/keyless-legacy", "alice slsaprovenance1 attestation", false, 5},
	}
	for _, c := range cases {
		reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, c.referrers, nil)
		root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
		if err != nil {
			t.Fatal(err)
		}
		req := sigstoreColumns(t, reg)[c.col]
		req.Image, req.Trust = mustRef(t, reg.Ref(c.repo, "1.0")), root
		cnt := newCounter()
		res, err := newVerifier(cnt, cosign.Options{}).Verify(context.Background(), req)
		if err != nil || !res.Allowed {
			t.Fatalf("%s %s: %+v %v", c.repo, c.col, res, err)
		}
		t.Logf("%s, %s, referrers=%v: %d round trips", c.repo, c.col, c.referrers, cnt.n.Load())
		if got := cnt.n.Load(); got > c.max {
			t.Errorf("%s, %s, referrers=%v: %d round trips, want at most %d", c.repo, c.col, c.referrers, got, c.max)
		}
	}
}

// BenchmarkVerifyKeylessCold is a cold keyless verification as the node makes
// it for an image it has not judged: a new Verifier (no connection, no
// token), the registry round trips to find and read the signatures from a
// loopback registry without the referrers API, and the offline Sigstore
// checks (compare with sigverify's BenchmarkCosignVerifyKeyless, the real
// cosign CLI on the same image).
func BenchmarkVerifyKeylessCold(b *testing.B) {
	for _, referrers := range []bool{false, true} {
		b.Run(map[bool]string{false: "fallback-tag", true: "referrers-API"}[referrers], func(b *testing.B) {
			reg := fixtureregistry.ServeSet(b, fixtureregistry.Sigstore, referrers, nil)
			root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
			if err != nil {
				b.Fatal(err)
			}
			req := cosign.Request{Image: mustRef(b, reg.Ref("fx/keyless-bundle", "1.0")), Trust: root,
				Attestors: []cosign.Attestor{{Identities: []sigverify.Identity{alice}}}}
			b.ResetTimer()
			for range b.N {
				res, err := newVerifier(nil, cosign.Options{}).Verify(context.Background(), req)
				if err != nil || !res.Allowed {
					b.Fatalf("%+v %v", res, err)
				}
			}
		})
	}
}

// TestKeylessThresholdCountsSigners: a threshold counts distinct proven
// signers, not attestors. fx/keyless-bundle has one keyless signature (and one
// attestation) by alice; two attestors that both accept alice are still one
// signer, so a count of 2 is not met.
func TestKeylessThresholdCountsSigners(t *testing.T) {
	reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, true, nil)
	root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
	if err != nil {
		t.Fatal(err)
	}
	anyExample := sigverify.Identity{SubjectRegExp: `@example\.com$`, Issuer: alice.Issuer}
	both := []cosign.Attestor{{Identities: []sigverify.Identity{alice}}, {Identities: []sigverify.Identity{anyExample}}}
	slsa, _ := attest.PredicateType("slsaprovenance1")
	cases := []struct {
		name      string
		attestors []cosign.Attestor
		threshold int
		att       *cosign.Attestation
		allowed   bool
		reason    string
	}{
		{"one signer, two attestors, count 2", both, 2, nil, false, "signed by 1 of the 2 required trusted signers (verified: keyless subject \"alice@example.com\""},
		{"one signer, two attestors, all", both, 0, nil, false, "are 1 distinct signer(s)"},
		{"one signer, two attestors, count 1", both, 1, nil, true, ""},
		{"attestation: one signer, count 2", both, 2, &cosign.Attestation{PredicateType: slsa}, false, "signed by 1 of the 2 required"},
		{"attestation: one signer, count 1", both, 1, &cosign.Attestation{PredicateType: slsa}, true, ""},
	}
	v := newVerifier(nil, cosign.Options{})
	for _, c := range cases {
		res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref("fx/keyless-bundle", "1.0")), Trust: root, Attestors: c.attestors, Threshold: c.threshold, Attestation: c.att})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if res.Allowed != c.allowed || !strings.Contains(res.Reason, c.reason) {
			t.Errorf("%s: allowed=%v reason %q, want %v %q", c.name, res.Allowed, res.Reason, c.allowed, c.reason)
		}
	}
}

// TestPanicRefused: a panic while verifying one signature (here a
// condition's time_now() reading a clock that panics, as a JMESPath function
// choking on a predicate would) is recovered in the verifier's goroutine: the
// attestation is refused with where it panicked, and the process lives on.
func TestPanicRefused(t *testing.T) {
	cases := []struct {
		repo      string
		referrers bool
	}{{"fx/keyless-bundle", true}, {"fx/keyless-bundle", false}, {"fx/keyless-legacy", false}}
	for _, c := range cases {
		reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, c.referrers, nil)
		root, err := trust.LoadFile(filepath.Join(reg.Dir, "trusted_root.json"))
		if err != nil {
			t.Fatal(err)
		}
		cond, err := attest.Compile([]attest.AnyAllConditions{{All: []attest.Condition{{Key: "{{ time_now() }}", Operator: "NotEquals", Value: "x"}}}},
			attest.WithClock(func() time.Time { panic("clock exploded") }))
		if err != nil {
			t.Fatal(err)
		}
		slsa, _ := attest.PredicateType("slsaprovenance1")
		res, err := newVerifier(nil, cosign.Options{}).Verify(context.Background(), cosign.Request{
			Image: mustRef(t, reg.Ref(c.repo, "1.0")), Trust: root,
			Attestors:   []cosign.Attestor{{Identities: []sigverify.Identity{alice}}},
			Attestation: &cosign.Attestation{PredicateType: slsa, Conditions: cond},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"panicked at", "TestPanicRefused", "sigstore_test.go:", "clock exploded", "the panic was recovered"} {
			if res.Allowed || !strings.Contains(res.Reason, want) {
				t.Errorf("%s referrers=%v: allowed=%v reason %q, want a denial with %q", c.repo, c.referrers, res.Allowed, res.Reason, want)
			}
		}
		t.Logf("%s referrers=%v: %s", c.repo, c.referrers, res.Reason)
	}
}
