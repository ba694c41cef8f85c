package enforce

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/internal/crirecord"
	"github.com/criguard/criguard/internal/fixtureregistry"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/policy"
)

// TestEnforcerThroughProxy joins the real pieces short of containerd: a client
// talks gRPC to the proxy, whose Enforcer asks the real policy engine and
// verifier about images in a registry of cosign-signed fixtures, and forwards to
// a fake runtime. What the client sees is what kubelet would.
func TestEnforcerThroughProxy(t *testing.T) {
	reg, engine := fixtureEngine(t)
	images := &fakeImages{images: map[string]*runtimeapi.Image{}}
	tagger := &fakeTagger{}
	metrics := NewMetrics(prometheus.NewRegistry())
	enf, err := New(Options{
		Judge: engine, Images: images, Sandboxes: &fakeSandboxes{}, Tagger: tagger, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := startProxy(t, enf)
	ctx := t.Context()

	signed := reg.Ref("demo/signed-bundle", "1.0")
	resp, err := env.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: signed}})
	if err != nil {
		t.Fatalf("pull of a signed image: %v", err)
	}
	pulled := env.up.LastPull().GetImage().GetImage()
	wantPulled := reg.Host + "/demo/signed-bundle@sha256:"
	if !strings.HasPrefix(pulled, wantPulled) || resp.GetImageRef() != "ref-of-"+pulled {
		t.Fatalf("runtime pulled %q (want %s...), client got image_ref %q", pulled, wantPulled, resp.GetImageRef())
	}
	digest := strings.TrimPrefix(pulled, reg.Host+"/demo/signed-bundle@")
	if len(tagger.calls) != 1 || tagger.calls[0] != [2]string{signed, pulled} {
		t.Errorf("tag calls %v", tagger.calls)
	}

	for _, repo := range []string{"demo/unsigned", "demo/wrong-key", "demo/moved", "demo/replayed"} {
		before := env.up.PullCount()
		_, err := env.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref(repo, "1.0")},
			SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns"}}})
		st := status.Convert(err)
		if st.Code() != codes.Unknown || !strings.HasPrefix(st.Message(), forward.DeniedPrefix) || !strings.Contains(st.Message(), "rule signed-by-a") {
			t.Errorf("pull of %s: %v, want Unknown %q... naming the rule", repo, err, forward.DeniedPrefix)
		}
		if env.up.PullCount() != before {
			t.Errorf("pull of %s reached the runtime", repo)
		}
	}

	// The pod's sandbox, through the proxy: the Enforcer learns its namespace.
	sb, err := env.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns"}}})
	if err != nil {
		t.Fatal(err)
	}

	// CreateContainer of the verified image: judged from the verdict cache.
	const id = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	images.images[id] = &runtimeapi.Image{Id: id, RepoTags: []string{signed}, RepoDigests: []string{pulled}}
	unsignedDg := "sha256:3333333333333333333333333333333333333333333333333333333333333333"
	images.images["sideloaded"] = &runtimeapi.Image{Id: "sideloaded", RepoDigests: []string{reg.Host + "/demo/unsigned@" + unsignedDg}}
	create := func(image, asked string) error {
		_, err := env.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.GetPodSandboxId(),
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
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), forward.DeniedPrefix) || !strings.Contains(st.Message(), unsignedDg) {
		t.Errorf("create of a side-loaded unsigned image: %v", err)
	}
	if c := env.up.LastCreate(); c == nil || c.GetConfig().GetImage().GetImage() != id {
		t.Errorf("runtime saw create %v, want only the verified one", c)
	}
}

// recordingRuntime is the upstream of TestEnforcerThroughProxy: it records the
// judged calls that reach it, as containerd would receive them.
type recordingRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
	crirecord.Calls
}

func (f *recordingRuntime) PullImage(_ context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	f.AddPull(req)
	return &runtimeapi.PullImageResponse{ImageRef: "ref-of-" + req.GetImage().GetImage()}, nil
}

func (f *recordingRuntime) RunPodSandbox(_ context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb-" + req.GetConfig().GetMetadata().GetName()}, nil
}

func (f *recordingRuntime) CreateContainer(_ context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	f.AddCreate(req)
	return &runtimeapi.CreateContainerResponse{ContainerId: "ctr"}, nil
}

type proxyEnv struct {
	up  *recordingRuntime
	img runtimeapi.ImageServiceClient
	rt  runtimeapi.RuntimeServiceClient
}

// startProxy runs the real forwarding server with g as its Guard in front of
// a recordingRuntime, both on unix sockets, until the test ends.
func startProxy(t *testing.T, g forward.Guard) *proxyEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "cge") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	env := &proxyEnv{up: &recordingRuntime{}}
	upSrv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(upSrv, env.up)
	runtimeapi.RegisterImageServiceServer(upSrv, env.up)
	upLis, err := net.Listen("unix", filepath.Join(dir, "up.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = upSrv.Serve(upLis) }()
	t.Cleanup(upSrv.Stop)
	conn, err := forward.Dial(t.Context(), filepath.Join(dir, "up.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv, err := forward.NewServer(forward.Options{Upstream: conn, Guard: g})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := forward.ListenUnix(t.Context(), filepath.Join(dir, "proxy.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("proxy Serve: %v", err)
		}
	})
	client, err := grpc.NewClient("unix://"+filepath.Join(dir, "proxy.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	env.img = runtimeapi.NewImageServiceClient(client)
	env.rt = runtimeapi.NewRuntimeServiceClient(client)
	return env
}

// fixtureEngine serves the cosign-signed fixtures and returns the registry
// and the real policy engine and verifier under a node policy: images under
// demo/ need a signature by fixture key a (rule signed-by-a), any other
// image is denied.
func fixtureEngine(tb testing.TB) (*fixtureregistry.Registry, *policy.Engine) {
	tb.Helper()
	reg := fixtureregistry.Serve(tb, true, nil)
	tb.Setenv("DOCKER_CONFIG", tb.TempDir())
	pol := filepath.Join(tb.TempDir(), "policy.yaml")
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
		tb.Fatal(err)
	}
	store, err := policy.NewStore(pol, policy.StoreOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return reg, policy.NewEngine(store, cosign.New(cosign.Options{}), policy.EngineOptions{})
}
