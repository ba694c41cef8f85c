package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/criguard/criguard/verifier/imageref"
)

// TestCanonicalRegistryMatching is issue 11 §1: a different spelling of the
// same registry must not dodge a rule. Each pattern sits in a Verify rule under
// unmatchedImages: Allow, where a missed match used to mean "allowed unsigned".
func TestCanonicalRegistryMatching(t *testing.T) {
	unsigned := digestOf('9')
	tests := []struct {
		name, pattern, image string
		match                bool
	}{
		{"leading zero in the port", "127.0.0.1:5199/team/*", "127.0.0.1:05199/team/x", true},
		{"leading zeros in the pattern's port", "127.0.0.1:05199/team/*", "127.0.0.1:5199/team/x", true},
		{"upper-case host", "registry.example.com/team/*", "REGISTRY.Example.com/team/x", true},
		{"upper-case host in the pattern", "Registry.Example.com/team/*", "registry.example.com/team/x", true},
		{"explicit :443", "registry.example.com/team/*", "registry.example.com:443/team/x", true},
		{"explicit :443 in the pattern", "registry.example.com:443/team/*", "registry.example.com/team/x", true},
		{"explicit :80 on a loopback registry", "127.0.0.1/team/*", "127.0.0.1:80/team/x", true},
		{"Hub alias index.docker.io", "docker.io/library/*", "index.docker.io/library/nginx:1.25", true},
		{"Hub alias registry-1.docker.io", "docker.io/team/*", "registry-1.docker.io/team/app", true},
		{"Hub alias in the pattern", "index.docker.io/library/*", "nginx:1.25", true},
		{"IPv6 literal spelled long", "[::1]:5000/team/*", "[0:0:0:0:0:0:0:1]:5000/team/x", true},
		{"IPv4-mapped IPv6 literal", "127.0.0.1:5199/team/*", "[::ffff:127.0.0.1]:5199/team/x", true},
		// Docker Hub short names: the short pattern matches only images written
		// short (Kyverno's spelling keeps the path as written).
		{"short pattern, short image", "docker.io/nginx:*", "nginx:1.25", true},
		{"short pattern, docker.io short image", "docker.io/nginx:*", "docker.io/nginx:1.25", true},
		{"short pattern, full image", "docker.io/nginx:*", "docker.io/library/nginx:1.25", false},
		{"full pattern, short image", "docker.io/library/nginx:*", "nginx:1.25", true},
		// Different servers stay different.
		{"another port", "127.0.0.1:5199/team/*", "127.0.0.1:5200/team/x", false},
		{":443 on a loopback (plain HTTP) registry", "127.0.0.1/team/*", "127.0.0.1:443/team/x", false},
		{"localhost is not 127.0.0.1 (only DNS makes them equal)", "127.0.0.1:5199/team/*", "localhost:5199/team/x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			eng := e.engine(native("  unmatchedImages: Allow\n", `  - name: team
    images: ["`+tt.pattern+`"]
    attestors:
      entries:
      - key: {data: KEYA}
`))
			d := eng.Evaluate(context.Background(), Input{Image: tt.image, Digest: unsigned, Namespace: "default"})
			if d.Allowed == tt.match {
				t.Fatalf("pattern %q, image %q: allowed=%v (%s); want the rule to match=%v", tt.pattern, tt.image, d.Allowed, d.Reason, tt.match)
			}
			if tt.match && d.Rule != "team" {
				t.Fatalf("denied by %q, want rule team: %s", d.Rule, d.Reason)
			}
		})
	}
}

// TestUncanonicalReferencesAreRefused: what cannot be made canonical is
// refused, never guessed (also under unmatchedImages: Allow).
func TestUncanonicalReferencesAreRefused(t *testing.T) {
	e := newEnv(t)
	eng := e.engine(native("  unmatchedImages: Allow\n", verifyA))
	for _, img := range []string{"127.1:5199/team/x", "0177.0.0.1:5199/team/x", "[fe80::1%25eth0]:5000/x", "127.0.0.1:0/x"} {
		d := eng.Evaluate(context.Background(), Input{Image: img, Namespace: "default"})
		if d.Allowed || !strings.Contains(d.Reason, "registry") {
			t.Errorf("%s: allowed=%v reason %q; want a refusal naming the registry", img, d.Allowed, d.Reason)
		}
	}
	if _, err := loadString(t, e.expand(native("", `  - name: team
    images: ["127.1/team/*"]
    attestors:
      entries:
      - key: {data: KEYA}
`))); err == nil || !strings.Contains(err.Error(), "spec.rules[0].images[0]") {
		t.Errorf("a pattern whose registry cannot be made canonical loaded: %v", err)
	}
}

// TestOnlySHA256Digests: the engine used to accept sha384/sha512 digests that
// the verifier then refused; now the one digest check refuses them first.
func TestOnlySHA256Digests(t *testing.T) {
	e := newEnv(t)
	eng := e.engine(native("  unmatchedImages: Allow\n", verifyA))
	for _, dg := range []string{"sha384:" + strings.Repeat("a", 96), "sha512:" + strings.Repeat("a", 128)} {
		d := eng.Evaluate(context.Background(), Input{Image: "ghcr.io/x/y", Digest: dg, Namespace: "default"})
		if d.Allowed || !strings.Contains(d.Reason, "sha256") {
			t.Errorf("digest %s: allowed=%v %q", dg, d.Allowed, d.Reason)
		}
		d = eng.Evaluate(context.Background(), Input{Image: "ghcr.io/x/y@" + dg, Namespace: "default"})
		if d.Allowed {
			t.Errorf("reference pinning %s allowed: %q", dg, d.Reason)
		}
	}
	if e.v.verifies.Load() != 0 {
		t.Errorf("%d verifications for digests nobody can verify", e.v.verifies.Load())
	}
}

// TestInputRefIsNotParsedAgain: a caller that parsed the reference passes it;
// the engine judges that Ref (its canonical name), not Image.
func TestInputRefIsNotParsedAgain(t *testing.T) {
	e := newEnv(t)
	eng := e.engine(native("  unmatchedImages: Allow\n", verifyA))
	ref, err := imageref.Parse("REGISTRY.example.com:443/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	d := eng.Evaluate(context.Background(), Input{Image: "not parsed", Ref: ref, Digest: digestOf('5'), Namespace: "default"})
	if d.Allowed || d.Rule != "team" || d.Image != "registry.example.com/team/app:v1" {
		t.Fatalf("got %+v", d)
	}
}
