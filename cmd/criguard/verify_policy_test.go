package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criguard/criguard/internal/fixtureregistry"
)

// TestVerifyPolicy: `criguard verify --policy` judges as the proxy's engine
// does: rules per namespace, Audit mode, unmatched images, and refuses to mix
// policy and command-line trust.
func TestVerifyPolicy(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, nil)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policyFor := func(mode string) string {
		return fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: node}
spec:
  mode: %s
  unmatchedImages: Deny
  rules:
  - name: dev-anything
    images: ["%[2]s/demo/*"]
    namespaces: ["dev"]
    action: Allow
  - name: signed-by-a
    images: ["%[2]s/demo/*"]
    namespaces: ["default", "prod"]
    action: Verify
    attestors:
      entries:
      - key: {file: %[3]s}
`, mode, reg.Host, reg.Key("a"))
	}
	enforce := write("enforce.yaml", policyFor("Enforce"))
	audit := write("audit.yaml", policyFor("Audit"))
	broken := write("broken.yaml", strings.Replace(policyFor("Enforce"), "action: Allow", "action: Maybe", 1))
	signed, unsigned := reg.Ref("demo/signed-bundle", "1.0"), reg.Ref("demo/unsigned", "1.0")

	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"signed allowed", []string{"--policy", enforce, signed}, 0,
			[]string{"image " + signed + " (digest sha256:", ") allowed by policy node rule signed-by-a"}, ""},
		{"unsigned denied", []string{"--policy", enforce, signed, unsigned}, 1,
			[]string{"image " + signed + " (digest sha256:8eb0a5e2f7417fc242170868cda2d7b7367aef262c44c39d54e7f8740ea7a94d) allowed", "image " + unsigned + " (digest sha256:3c8e47f2", ") denied by policy node rule signed-by-a: ", "no cosign signatures"}, ""},
		{"namespace rule", []string{"--policy", enforce, "--namespace", "dev", unsigned}, 0,
			[]string{"image " + unsigned + " (digest sha256:3c8e47f2", ") allowed by policy node rule dev-anything"}, ""},
		{"unmatched namespace", []string{"--policy", enforce, "--namespace", "other", signed}, 1,
			[]string{"image " + signed + " (digest unresolved) denied by policy node: no rule matches this image in namespace other, and unmatchedImages is Deny"}, ""},
		{"audit", []string{"--policy", audit, unsigned}, 0,
			[]string{"image " + unsigned + " (digest sha256:3c8e47f2", ") allowed by policy node rule signed-by-a: audit: would deny: "}, ""},
		{"invalid policy", []string{"--policy", broken, signed}, 2, nil, "Maybe"},
		{"missing policy", []string{"--policy", filepath.Join(dir, "none.yaml"), signed}, 2, nil, "none.yaml"},
		{"policy and key", []string{"--policy", enforce, "--key", reg.Key("a"), signed}, 2, nil, "--key cannot be combined with --policy"},
		{"namespace without policy", []string{"--key", reg.Key("a"), "--namespace", "dev", signed}, 2, nil, "--namespace only applies with --policy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"verify"}, c.args...), &stdout, &stderr)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout.String(), stderr.String())
			}
			for _, s := range c.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			if !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("stderr lacks %q:\n%s", c.stderr, stderr.String())
			}
		})
	}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"verify", "--policy", audit, "--output", "json", unsigned}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var out []struct {
		Image, Digest, Policy, Rule, Reason string
		Allowed, Audited                    bool
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(out) != 1 || !out[0].Allowed || !out[0].Audited || out[0].Policy != "node" || out[0].Rule != "signed-by-a" || !strings.HasPrefix(out[0].Digest, "sha256:") {
		t.Errorf("JSON verdict = %+v", out)
	}
}
