package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: default}
spec:
  rules:
  - name: pause
    images: ["registry.k8s.io/pause:*"]
    namespaces: ["kube-system"]
    action: Allow
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: x}\nspec:\n  rules:\n  - name: r\n    images: [\"*\"]\n    acton: Allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	twoBad := filepath.Join(dir, "twobad.yaml")
	if err := os.WriteFile(twoBad, []byte("apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: x}\nspec:\n  mode: Sometimes\n  rules:\n  - name: r\n    images: [\"*\"]\n    acton: Allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A Kyverno policy in Audit mode over every image beside an ImagePolicy
	// with unmatchedImages: Deny (issue 11 §2).
	mixed := filepath.Join(dir, "mixed")
	if err := os.MkdirAll(mixed, 0o755); err != nil {
		t.Fatal(err)
	}
	goodText, _ := os.ReadFile(good)
	if err := os.WriteFile(filepath.Join(mixed, "a.yaml"), goodText, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mixed, "b.yaml"), []byte(`apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: audit-all}
spec:
  rules:
  - name: everything
    match: {any: [{resources: {kinds: [Pod]}}]}
    verifyImages:
    - imageReferences: ["*"]
      mutateDigest: false
      attestors:
      - entries:
        - keys:
            publicKeys: |
              -----BEGIN PUBLIC KEY-----
              MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAElY3qYS20oQw2SSMQsD2tdFlGwIOW
              pT5us9TbdFIxabcG41tmFMQJHIbaRzQ+Pnm15BNX5OdyYq4BQOMMoebgJQ==
              -----END PUBLIC KEY-----
            rekor: {ignoreTlog: true}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", good}, 0, `rule "pause": Allow`, ""},
		{[]string{"check", good}, 0, "images no rule matches: denied", ""},
		{[]string{"check", bad}, 1, "", "bad.yaml: document 1: spec.rules[0].acton: unknown field"},
		{[]string{"check", filepath.Join(dir, "missing.yaml")}, 1, "", "missing.yaml"},
		// Every reason of a document, not only the first.
		{[]string{"check", twoBad}, 1, "", "twobad.yaml: document 1: spec.rules[0].acton: unknown field"},
		{[]string{"check", twoBad}, 1, "", "twobad.yaml: document 1: spec.mode: unknown value \"Sometimes\""},
		// The combined effect, as the engine decides it.
		{[]string{"check", mixed}, 0, "images only Audit-mode rules match: denied by policy default: only Audit-mode rules match this image (audit-all/everything", ""},
		{[]string{"check"}, 2, "", "usage"},
		{[]string{"check", good, bad}, 2, "", "usage"},
		{[]string{"frobnicate"}, 2, "", "unknown subcommand"},
		{nil, 2, "", "usage"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := runPolicy(context.Background(), c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) {
			t.Errorf("%v: code %d\nstdout %s\nstderr %s", c.args, code, out.String(), errb.String())
		}
	}
}
