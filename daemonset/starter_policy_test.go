package daemonset

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/policy"
)

// noRegistry fails every lookup: the starter policy must decide the cluster's
// own images without verifying anything (kind's are imported, with no digest).
type noRegistry struct{ t *testing.T }

func (n noRegistry) Resolve(context.Context, imageref.Ref, *cosign.Auth) (string, error) {
	return "", errors.New("no registry in this test")
}

func (n noRegistry) Verify(_ context.Context, req cosign.Request) (cosign.Result, error) {
	n.t.Errorf("starter policy verified %v: it has no Verify rule", req)
	return cosign.Result{}, errors.New("no registry in this test")
}

const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestStarterPolicy(t *testing.T) {
	set, err := policy.Load("policy")
	if err != nil {
		t.Fatalf("starter policy does not load: %v", err)
	}
	e := policy.NewEngine(policy.NewStaticStore(set), noRegistry{t}, policy.EngineOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	cases := []struct {
		image   string
		digest  string
		ns      string
		allowed bool
	}{
		// What a fresh kind cluster runs, pre-loaded (no registry digest).
		{image: "registry.k8s.io/pause:3.10", ns: "kube-system", allowed: true},
		{image: "registry.k8s.io/etcd:3.6.4-0", ns: "kube-system", allowed: true},
		{image: "registry.k8s.io/kube-apiserver:v1.34.0", ns: "kube-system", allowed: true},
		{image: "registry.k8s.io/kube-proxy:v1.34.0", ns: "kube-system", allowed: true},
		{image: "registry.k8s.io/coredns/coredns:v1.12.1", ns: "kube-system", allowed: true},
		{image: "docker.io/kindest/kindnetd:v20250512-df8de77b", ns: "kube-system", allowed: true},
		{image: "docker.io/kindest/local-path-provisioner:v20250214-acbabc1a", ns: "local-path-storage", allowed: true},
		// criguard itself, as ko publishes it to kind's local registry.
		{image: "localhost:5001/github.com/criguard/criguard/cmd/criguard@" + dg, digest: dg, ns: "criguard-system", allowed: true},
		// Everything else is denied, signed or not, until the operator adds a rule.
		{image: "docker.io/library/nginx:1.27", ns: "default"},
		{image: "nginx@" + dg, digest: dg, ns: "default"},
		{image: "registry.k8s.io.evil.example/pause:3.10", ns: "kube-system"},
		{image: "evil.example/registry.k8s.io/pause:3.10", ns: "kube-system"},
		{image: "docker.io/kindest-evil/kindnetd:v1", ns: "kube-system"},
	}
	for _, c := range cases {
		d := e.Evaluate(context.Background(), policy.Input{
			Operation: "CreateContainer", Image: c.image, Digest: c.digest, Local: c.digest == "", Namespace: c.ns,
		})
		if d.Allowed != c.allowed || d.Audited {
			t.Errorf("%s: allowed=%v audited=%v (rule %q: %s), want allowed=%v", c.image, d.Allowed, d.Audited, d.Rule, d.Reason, c.allowed)
		}
	}
}
