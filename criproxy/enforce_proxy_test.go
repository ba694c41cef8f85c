package criproxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/policy"
)

// TestEnforcerThroughProxy joins the real pieces short of containerd: a client
// talks gRPC to the proxy, whose Enforcer asks the real policy engine and
// verifier about images in a registry of cosign-signed fixtures, and forwards to
// a fake runtime. What the client sees is what kubelet would.
func TestEnforcerThroughProxy(t *testing.T) {
	reg := fixtureregistry.Serve(t, true, nil)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(fmt.Sprintf(`apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: node}
spec:
  unmatchedImages: Deny
  rules:
  - name: signed-by-a
    images: ["%s/demo/*"]
    attestors:
      entries:
      - key: {file: %s}
`, reg.Host, reg.Key("a"))), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := policy.NewStore(pol, policy.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	images := &fakeImages{images: map[string]*runtimeapi.Image{}}
	tagger := &fakeTagger{}
	metrics := NewMetrics()
	enf, err := NewEnforcer(EnforcerConfig{
		Judge: policy.NewEngine(store, cosign.New(cosign.Options{}), nil), Images: images, Tagger: tagger, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := startProxy(t, Options{Guard: enf}, true)
	ctx := context.Background()

	signed := reg.Ref("demo/signed-bundle", "1.0")
	resp, err := env.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: signed}})
	if err != nil {
		t.Fatalf("pull of a signed image: %v", err)
	}
	pulled := env.fake.lastPull().GetImage().GetImage()
	wantPulled := reg.Host + "/demo/signed-bundle@sha256:"
	if !strings.HasPrefix(pulled, wantPulled) || resp.GetImageRef() != "ref-of-"+pulled {
		t.Fatalf("runtime pulled %q (want %s...), client got image_ref %q", pulled, wantPulled, resp.GetImageRef())
	}
	digest := strings.TrimPrefix(pulled, reg.Host+"/demo/signed-bundle@")
	if len(tagger.calls) != 1 || tagger.calls[0] != [2]string{signed, pulled} {
		t.Errorf("tag calls %v", tagger.calls)
	}

	for _, repo := range []string{"demo/unsigned", "demo/wrong-key", "demo/moved", "demo/replayed"} {
		before := env.fake.pullCount()
		_, err := env.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref(repo, "1.0")},
			SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns"}}})
		st := status.Convert(err)
		if st.Code() != codes.Unknown || !strings.HasPrefix(st.Message(), DeniedPrefix) || !strings.Contains(st.Message(), "rule signed-by-a") {
			t.Errorf("pull of %s: %v, want Unknown %q... naming the rule", repo, err, DeniedPrefix)
		}
		if env.fake.pullCount() != before {
			t.Errorf("pull of %s reached the runtime", repo)
		}
	}

	// CreateContainer of the verified image: judged from the verdict cache.
	const id = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	images.images[id] = &runtimeapi.Image{Id: id, RepoTags: []string{signed}, RepoDigests: []string{pulled}}
	unsignedDg := "sha256:3333333333333333333333333333333333333333333333333333333333333333"
	images.images["sideloaded"] = &runtimeapi.Image{Id: "sideloaded", RepoDigests: []string{reg.Host + "/demo/unsigned@" + unsignedDg}}
	create := func(image, asked string) error {
		_, err := env.rt().CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb",
			Config: &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: asked}}})
		return err
	}
	if err := create(id, signed); err != nil {
		t.Fatalf("create of the verified image: %v", err)
	}
	if got := counterValue(t, metrics.cacheHits.WithLabelValues(OpCreateContainer)); got != 1 {
		t.Errorf("create was not answered from the verdict cache (hits %v); digest %s", got, digest)
	}
	err = create("sideloaded", reg.Ref("demo/unsigned", "1.0"))
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), DeniedPrefix) || !strings.Contains(st.Message(), unsignedDg) {
		t.Errorf("create of a side-loaded unsigned image: %v", err)
	}
	if c := env.fake.lastCreate(); c == nil || c.GetConfig().GetImage().GetImage() != id {
		t.Errorf("runtime saw create %v, want only the verified one", c)
	}
}
