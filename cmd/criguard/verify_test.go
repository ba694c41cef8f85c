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

func TestVerifyCommand(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, nil)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials from the machine
	bad := filepath.Join(t.TempDir(), "bad.pub")
	if err := os.WriteFile(bad, []byte("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signed, legacy, unsigned := reg.Ref("demo/signed-bundle", "1.0"), reg.Ref("demo/signed-legacy", "1.0"), reg.Ref("demo/unsigned", "1.0")
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"allowed", []string{"--insecure-ignore-tlog", "--key", reg.Key("a"), signed, legacy}, 0,
			[]string{"image " + signed + " (digest sha256:8eb0a5e2", ") allowed by policy command-line rule --key", "verified by " + reg.Key("a") + " (bundle sha256:2d912628", "image " + legacy + " (digest sha256:cf1e461c", "(legacy sha256:6f4b29a7"}, ""},
		{"one denied", []string{"--insecure-ignore-tlog", "--key", reg.Key("a"), signed, unsigned}, 1,
			[]string{"image " + signed + " (digest sha256:8eb0a5e2f7417fc242170868cda2d7b7367aef262c44c39d54e7f8740ea7a94d) allowed", "image " + unsigned + " (digest sha256:3c8e47f2", ") denied by policy command-line rule --key: ", "no cosign signatures found"}, ""},
		{"wrong key", []string{"--insecure-ignore-tlog", "--key", reg.Key("b"), signed}, 1, []string{"none verified by a trusted key (" + reg.Key("b") + ")"}, ""},
		{"two keys, count 1", []string{"--insecure-ignore-tlog", "--key", reg.Key("b"), "--insecure-ignore-tlog", "--key", reg.Key("a"), "--count", "1", signed}, 0, []string{") allowed by"}, ""},
		{"two keys, all required", []string{"--insecure-ignore-tlog", "--key", reg.Key("b"), "--insecure-ignore-tlog", "--key", reg.Key("a"), signed}, 1, []string{"signed by 1 of the 2 required"}, ""},
		{"missing tag", []string{"--insecure-ignore-tlog", "--key", reg.Key("a"), reg.Ref("demo/unsigned", "nope")}, 1, []string{"(digest unresolved) denied", "not found"}, ""},
		{"unreachable registry", []string{"--insecure-ignore-tlog", "--key", reg.Key("a"), "--timeout", "2s", "127.0.0.1:1/x/y:1"}, 1, []string{"denied (could not verify)", "could not complete"}, ""},
		{"no key", []string{signed}, 2, nil, "no --key"},
		{"no image", []string{"--insecure-ignore-tlog", "--key", reg.Key("a")}, 2, nil, "no image"},
		{"bad output", []string{"--insecure-ignore-tlog", "--key", reg.Key("a"), "--output", "yaml", signed}, 2, nil, "--output"},
		{"count over keys", []string{"--insecure-ignore-tlog", "--key", reg.Key("a"), "--count", "2", signed}, 2, nil, "--count"},
		{"missing key file", []string{"--key", "/nonexistent.pub", signed}, 2, nil, "/nonexistent.pub"},
		{"malformed PEM", []string{"--key", bad, signed}, 2, nil, "not a PEM public key"},
		{"unknown flag", []string{"--nope", signed}, 2, nil, "flag provided but not defined"},
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
}

func TestVerifyCommandJSON(t *testing.T) {
	reg := fixtureregistry.Serve(t, false, nil)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"verify", "--insecure-ignore-tlog", "--key", reg.Key("rsa"), "--output", "json", reg.Ref("demo/rsa", "1.0"), reg.Ref("demo/replayed", "1.0")}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s %s", code, stdout.String(), stderr.String())
	}
	var out []struct {
		Image    string `json:"image"`
		Digest   string `json:"digest"`
		Allowed  bool   `json:"allowed"`
		Verified []struct {
			Key, Format, Digest string
		} `json:"verified"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if len(out) != 2 || !out[0].Allowed || out[1].Allowed || out[0].Digest != reg.Tags["demo/rsa"]["1.0"] || len(out[0].Verified) != 2 || out[1].Reason == "" {
		t.Fatalf("unexpected verdicts: %+v", out)
	}
}
