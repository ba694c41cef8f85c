package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/criguard/criguard/internal/fixtureregistry"
)

// TestVerifySigstoreFlags: cosign's flag names and meanings, against the
// Sigstore fixtures (testdata/sigstore, verdicts.md).
func TestVerifySigstoreFlags(t *testing.T) {
	reg := fixtureregistry.ServeSet(t, fixtureregistry.Sigstore, false, nil)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	root := filepath.Join(reg.Dir, "trusted_root.json")
	// The same root without its CT logs: no SCT can verify.
	var tr map[string]any
	b, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatal(err)
	}
	delete(tr, "ctlogs")
	noCT := filepath.Join(t.TempDir(), "no-ct.json")
	b, _ = json.Marshal(tr)
	if err := os.WriteFile(noCT, b, 0o600); err != nil {
		t.Fatal(err)
	}
	img := func(repo string) string { return reg.Ref(repo, "1.0") }
	policyFile := filepath.Join(filepath.Dir(reg.Dir), "policies", "sigstore", "verify-image.yaml")
	key := reg.Key("t")
	alice := []string{"--certificate-identity", "alice@example.com", "--certificate-oidc-issuer", "http://127.0.0.1:8080"}
	gh := []string{"--certificate-identity-regexp", "^https://github.com/example/app/", "--certificate-oidc-issuer", "http://localhost:8080"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"key, tlog required, bundle", []string{"verify", "--trusted-root", root, "--key", key, img("fx/key-tlog-bundle"), img("fx/key-tlog-legacy")}, 0, "allowed"},
		{"key, tlog required, none logged", []string{"verify", "--trusted-root", root, "--key", key, img("fx/key-no-tlog")}, 1, "no transparency-log entry"},
		{"key, tlog ignored", []string{"verify", "--trusted-root", root, "--insecure-ignore-tlog", "--key", key, img("fx/key-no-tlog")}, 0, "allowed"},
		{"key, default public-good root", []string{"verify", "--key", key, img("fx/key-tlog-bundle")}, 1, "transparency"},
		{"keyless alice", cat([]string{"verify", "--trusted-root", root}, alice, []string{img("fx/keyless-bundle"), img("fx/keyless-legacy")}), 0, "alice@example.com"},
		{"keyless bob is not alice", cat([]string{"verify", "--trusted-root", root}, alice, []string{img("fx/keyless-bob")}), 1, "another identity"},
		{"keyless key-signed image", cat([]string{"verify", "--trusted-root", root}, alice, []string{img("fx/key-tlog-bundle")}), 1, "signed with a key"},
		{"keyless without SCT log", cat([]string{"verify", "--trusted-root", noCT}, alice, []string{img("fx/keyless-bundle")}), 1, "SCT"},
		{"keyless --insecure-ignore-sct", cat([]string{"verify", "--trusted-root", noCT, "--insecure-ignore-sct"}, alice, []string{img("fx/keyless-bundle")}), 0, "allowed"},
		{"keyless --insecure-ignore-tlog (TSA timestamp)", cat([]string{"verify", "--trusted-root", root, "--insecure-ignore-tlog"}, alice, []string{img("fx/keyless-bundle")}), 0, "allowed"},
		{"github workflow", cat([]string{"verify", "--trusted-root", root}, gh, []string{"--certificate-github-workflow-ref", "refs/heads/main",
			"--certificate-github-workflow-trigger", "push", "--certificate-github-workflow-sha", "0123456789abcdef0123456789abcdef01234567",
			"--certificate-github-workflow-name", "release", "--certificate-github-workflow-repository", "example/app", img("fx/github-main")}), 0, "allowed"},
		{"github workflow, other ref", cat([]string{"verify", "--trusted-root", root}, gh, []string{"--certificate-github-workflow-ref", "refs/heads/dev", img("fx/github-main")}), 1, "another identity"},
		{"github workflow, other sha", cat([]string{"verify", "--trusted-root", root}, gh, []string{"--certificate-github-workflow-sha", "ffff", img("fx/github-main")}), 1, "denied"},
		{"github workflow, other trigger", cat([]string{"verify", "--trusted-root", root}, gh, []string{"--certificate-github-workflow-trigger", "pull_request", img("fx/github-main")}), 1, "denied"},
		{"github workflow, other name", cat([]string{"verify", "--trusted-root", root}, gh, []string{"--certificate-github-workflow-name", "ci", img("fx/github-main")}), 1, "denied"},
		{"github workflow, other repository", cat([]string{"verify", "--trusted-root", root}, gh, []string{"--certificate-github-workflow-repository", "example/other", img("fx/github-main")}), 1, "denied"},
		{"attestation slsaprovenance1 alice", cat([]string{"verify-attestation", "--type", "slsaprovenance1", "--trusted-root", root}, alice, []string{img("fx/keyless-bundle"), img("fx/keyless-legacy")}), 0, "allowed"},
		{"attestation vuln key", []string{"verify-attestation", "--type", "vuln", "--trusted-root", root, "--key", key, img("fx/key-attest")}, 0, "allowed"},
		{"attestation vuln URI", []string{"verify-attestation", "--type", "https://cosign.sigstore.dev/attestation/vuln/v1", "--trusted-root", root, "--key", key, img("fx/key-attest")}, 0, "allowed"},
		{"attestation vuln missing", []string{"verify-attestation", "--type", "vuln", "--trusted-root", root, "--key", key, img("fx/key-tlog-bundle")}, 1, "no attestation of type https://cosign.sigstore.dev/attestation/vuln/v1"},
		{"attestation of another type", []string{"verify-attestation", "--type", "slsaprovenance1", "--trusted-root", root, "--key", key, img("fx/key-attest")}, 1, "denied"},
		{"policy with the trusted root", []string{"verify", "--policy", policyFile, "--trusted-root", root, img("fx/key-tlog-legacy")}, 0, "allowed by policy verify-image"},
		{"policy, unlogged signature", []string{"verify", "--policy", policyFile, "--trusted-root", root, img("fx/key-no-tlog")}, 1, "no transparency-log entry"},
		{"policy with the public-good root", []string{"verify", "--policy", policyFile, img("fx/key-tlog-legacy")}, 1, "denied"},
		{"policy and identity", cat([]string{"verify", "--policy", policyFile}, alice, []string{img("fx/unsigned")}), 2, ""},
		{"key and identity", cat([]string{"verify", "--key", key}, alice, []string{img("fx/unsigned")}), 2, ""},
		{"identity without issuer", []string{"verify", "--certificate-identity", "alice@example.com", img("fx/unsigned")}, 2, ""},
		{"unknown attestation type", []string{"verify-attestation", "--type", "nope", "--key", key, img("fx/unsigned")}, 2, ""},
		{"broken trusted root", []string{"verify", "--trusted-root", key, "--key", key, img("fx/unsigned")}, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), c.args, &stdout, &stderr)
			if code != c.code || !strings.Contains(stdout.String(), c.out) {
				t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, c.code, c.out, stdout.String(), stderr.String())
			}
			t.Log(strings.TrimSpace(stdout.String() + stderr.String()))
		})
	}
}
