package cosign_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/keys"
)

// cosignVerdicts is the fixture README's table: for each image (tag 1.0), the
// keys for which `cosign verify --key K --insecure-ignore-tlog` passes.
var cosignVerdicts = []struct {
	repo   string
	passes []string
	// reason, for the keys that fail, must contain this.
	reason string
}{
	{"demo/signed-bundle", []string{"a"}, "none verified by a trusted key"},
	{"demo/signed-legacy", []string{"a"}, "none verified by a trusted key"},
	{"demo/unsigned", nil, "no cosign signatures found"},
	{"demo/wrong-key", []string{"b"}, "none verified by a trusted key"},
	{"demo/two-signers", []string{"a", "b"}, "none verified by a trusted key"},
	{"demo/rsa", []string{"rsa"}, "none verified by a trusted key"},
	{"demo/replayed", nil, ""}, // per key: see replayedReason
	{"demo/moved", nil, "no cosign signatures found"},
	{"demo/multi", []string{"a"}, "none verified by a trusted key"},
}

var allKeys = []string{"a", "b", "rsa"}

// counter counts HTTP round trips.
type counter struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func newCounter() *counter {
	return &counter{rt: http.DefaultTransport.(*http.Transport).Clone()}
}

func loadKey(t testing.TB, reg *fixtureregistry.Registry, name string) *keys.Key {
	t.Helper()
	k, err := keys.LoadFile(reg.Key(name), "")
	if err != nil {
		t.Fatal(err)
	}
	k.Name = name
	return k
}

// newVerifier returns a verifier that never reads the node's docker config.
func newVerifier(rt http.RoundTripper, o cosign.Options) *cosign.Verifier {
	o.Transport = rt
	o.Keychain = authn.NewMultiKeychain()
	return cosign.New(o)
}

func TestFixturesAgreeWithCosign(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		name := "referrersAPI"
		if !referrers {
			name = "fallbackTag"
		}
		t.Run(name, func(t *testing.T) {
			reg := fixtureregistry.Serve(t, referrers, nil)
			v := newVerifier(nil, cosign.Options{})
			for _, row := range cosignVerdicts {
				for _, kn := range allKeys {
					want := slices.Contains(row.passes, kn)
					t.Run(row.repo+"/"+kn, func(t *testing.T) {
						k := loadKey(t, reg, kn)
						res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(row.repo, "1.0")), Attestors: cosign.KeyAttestors(true, k)})
						if err != nil {
							t.Fatalf("Verify: %v", err)
						}
						if res.Allowed != want {
							t.Fatalf("allowed=%v, cosign says %v; reason: %s", res.Allowed, want, res.Reason)
						}
						if res.Digest != reg.Tags[row.repo]["1.0"] {
							t.Errorf("judged digest %s, tag names %s", res.Digest, reg.Tags[row.repo]["1.0"])
						}
						if want {
							if res.Reason != "" || len(res.Verified) == 0 || res.Verified[0].Key != kn {
								t.Errorf("allow without a verified signature by %s: %+v", kn, res)
							}
							return
						}
						wantReason := row.reason
						if row.repo == "demo/replayed" {
							wantReason = "none verified by a trusted key"
							if kn == "a" {
								wantReason = "signature for another digest"
							}
						}
						if !strings.Contains(res.Reason, wantReason) {
							t.Errorf("reason %q does not contain %q", res.Reason, wantReason)
						}
						if len(res.Verified) != 0 {
							t.Errorf("denial lists verified signatures: %+v", res.Verified)
						}
						t.Logf("%s", res.Reason)
					})
				}
			}
		})
	}
}

func TestThreshold(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, nil)
	v := newVerifier(nil, cosign.Options{})
	a, b, rsa := loadKey(t, reg, "a"), loadKey(t, reg, "b"), loadKey(t, reg, "rsa")
	pemA, err := os.ReadFile(reg.Key("a"))
	if err != nil {
		t.Fatal(err)
	}
	aCopy, err := keys.Parse("a-copy", pemA, "") // the same key material under another name
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		repo      string
		keys      []*keys.Key
		threshold int
		allowed   bool
		reason    string
	}{
		{"demo/two-signers", []*keys.Key{a, b}, 0, true, ""},
		{"demo/two-signers", []*keys.Key{a, b}, 2, true, ""},
		{"demo/two-signers", []*keys.Key{a, b, rsa}, 2, true, ""},
		{"demo/two-signers", []*keys.Key{a, b, rsa}, 0, false, "signed by 2 of the 3 required trusted keys (verified: a, b; missing: rsa)"},
		{"demo/signed-bundle", []*keys.Key{a, b}, 0, false, "signed by 1 of the 2 required"},
		{"demo/signed-bundle", []*keys.Key{a, b}, 1, true, ""},
		{"demo/signed-bundle", []*keys.Key{b, rsa}, 1, false, "none verified by a trusted key (b, rsa)"},
		{"demo/signed-bundle", []*keys.Key{a}, 2, false, "requires 2 trusted keys but lists only 1"},
		{"demo/signed-bundle", nil, 0, false, "no trusted keys"},
		// One key listed twice is one signer: one signature never meets a count of 2.
		{"demo/signed-bundle", []*keys.Key{a, aCopy}, 2, false, "lists only 1 distinct"},
		{"demo/signed-legacy", []*keys.Key{a, aCopy}, 2, false, "lists only 1 distinct"},
		{"demo/two-signers", []*keys.Key{a, aCopy, b}, 2, true, ""},
		{"demo/signed-bundle", []*keys.Key{a, aCopy}, 0, true, ""},
	}
	for _, c := range cases {
		res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(c.repo, "1.0")), Attestors: cosign.KeyAttestors(true, c.keys...), Threshold: c.threshold})
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed != c.allowed || !strings.Contains(res.Reason, c.reason) {
			t.Errorf("%s keys=%d threshold=%d: allowed=%v reason=%q, want %v %q", c.repo, len(c.keys), c.threshold, res.Allowed, res.Reason, c.allowed, c.reason)
		}
	}
}

// TestRoundTrips pins the registry requests of one cold verification (new
// Verifier, tag reference): at most 4 for a legacy signature, 5 for a bundle
// found through the referrers API.
func TestRoundTrips(t *testing.T) {
	cases := []struct {
		repo      string
		referrers bool
		max       int64
	}{
		{"demo/signed-legacy", true, 4},
		{"demo/signed-bundle", true, 5},
		{"demo/signed-bundle", false, 6},
		{"demo/signed-legacy", false, 5},
	}
	for _, c := range cases {
		reg := fixtureregistry.Serve(t, c.referrers, nil)
		cnt := newCounter()
		v := newVerifier(cnt, cosign.Options{})
		res, err := v.Verify(context.Background(), cosign.Request{Image: mustRef(t, reg.Ref(c.repo, "1.0")), Attestors: cosign.KeyAttestors(true, loadKey(t, reg, "a"))})
		if err != nil || !res.Allowed {
			t.Fatalf("%s: %+v %v", c.repo, res, err)
		}
		t.Logf("%s referrers=%v: %d round trips", c.repo, c.referrers, cnt.n.Load())
		if got := cnt.n.Load(); got > c.max {
			t.Errorf("%s referrers=%v: %d round trips, want at most %d", c.repo, c.referrers, got, c.max)
		}
	}
}

func TestResolve(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, nil)
	v := newVerifier(nil, cosign.Options{})
	d, err := v.Resolve(context.Background(), mustRef(t, reg.Ref("demo/multi", "1.0")), nil)
	if err != nil || d != reg.Tags["demo/multi"]["1.0"] {
		t.Fatalf("Resolve = %s %v", d, err)
	}
	pinned := "sha256:" + hex64()
	if d, err := v.Resolve(context.Background(), mustRef(t, reg.Host+"/demo/multi@"+pinned), nil); err != nil || d != pinned {
		t.Fatalf("Resolve of a digest reference = %s %v, want the pinned digest without a registry call", d, err)
	}
	_, err = v.Resolve(context.Background(), mustRef(t, reg.Ref("demo/multi", "nope")), nil)
	if err == nil || errors.Is(err, cosign.ErrIncomplete) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing tag: %v", err)
	}
}

// mustRef parses an image reference (the one parse an image gets).
func mustRef(t testing.TB, s string) imageref.Ref {
	t.Helper()
	r, err := imageref.Parse(s)
	if err != nil {
		t.Fatalf("image reference %q: %v", s, err)
	}
	return r
}

func hex64() string { return strings.Repeat("ab", 32) }
