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
	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", good}, 0, `rule "pause": Allow`, ""},
		{[]string{"check", good}, 0, "images no rule matches: denied", ""},
		{[]string{"check", bad}, 1, "", "bad.yaml: document 1: spec.rules[0].acton: unknown field"},
		{[]string{"check", filepath.Join(dir, "missing.yaml")}, 1, "", "missing.yaml"},
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
