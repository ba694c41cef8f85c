package forward

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// withUnknown appends field num (a string, length-delimited) to m's unknown
// fields, as a newer kubelet's field would arrive.
func withUnknown(m proto.Message, num protowire.Number) {
	r := m.ProtoReflect()
	b := append([]byte(nil), r.GetUnknown()...)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendString(b, "evil.example/miner:latest")
	r.SetUnknown(protoreflect.RawFields(b))
}

func TestUnknownField(t *testing.T) {
	mount := &runtimeapi.Mount{ContainerPath: "/data"}
	withUnknown(mount, 4242)
	label := &runtimeapi.KeyValue{Key: "k"}
	withUnknown(label, 77)
	tests := []struct {
		name string
		msg  proto.Message
		want string
	}{
		{"clean pull", &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "a/b:1"}, Auth: &runtimeapi.AuthConfig{Username: "u"}}, ""},
		{"top level", func() proto.Message {
			m := &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "a/b:1"}}
			withUnknown(m, 99)
			return m
		}(), "#99"},
		{"nested message", func() proto.Message {
			spec := &runtimeapi.ImageSpec{Image: "a/b:1"}
			withUnknown(spec, 1000)
			return &runtimeapi.PullImageRequest{Image: spec}
		}(), "image.#1000"},
		{"in a list", &runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{
			Image:  &runtimeapi.ImageSpec{Image: "a/b:1"},
			Mounts: []*runtimeapi.Mount{{ContainerPath: "/ok"}, mount},
		}}, "config.mounts[1].#4242"},
		{"in a list of key values", &runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{
			Envs: []*runtimeapi.KeyValue{label},
		}}, "config.envs[0].#77"},
		{"maps of strings are fine", &runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{
			Labels: map[string]string{"a": "b"},
		}, SandboxConfig: &runtimeapi.PodSandboxConfig{Annotations: map[string]string{"x": "y"}}}, ""},
		{"nil", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			if tc.msg != nil {
				got = UnknownField(tc.msg)
			} else {
				got = UnknownField(nil)
			}
			if got != tc.want {
				t.Errorf("UnknownField = %q, want %q", got, tc.want)
			}
		})
	}
}

// A judged request carrying a field the compiled cri-api does not know is
// refused before the Guard (which would forward it) and never reaches the
// runtime; other methods still pass unknown fields through untouched.
func TestUnknownFieldRefused(t *testing.T) {
	pass := funcGuard{
		pull: func(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
			return next(ctx, r)
		},
		create: func(ctx context.Context, r *runtimeapi.CreateContainerRequest, next CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
			return next(ctx, r)
		},
	}
	e := startProxy(t, Options{Guard: pass}, true)
	ctx := testCtx(t)

	spec := &runtimeapi.ImageSpec{Image: "reg.example/app:1"}
	withUnknown(spec, 31)
	_, err := e.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec})
	if status.Code(err) != codes.Unknown || !strings.HasPrefix(status.Convert(err).Message(), DeniedPrefix) ||
		!strings.Contains(err.Error(), "image.#31") {
		t.Errorf("PullImage with an unknown field: %v; want Unknown, %q..., naming image.#31", err, DeniedPrefix)
	}
	if up := e.fake.LastPull(); up != nil {
		t.Errorf("runtime saw the pull: %v", up)
	}

	cfg := &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: "reg.example/app:1"}}
	withUnknown(cfg, 555)
	_, err = e.rt().CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "pod1", Config: cfg})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), DeniedPrefix) || !strings.Contains(err.Error(), "config.#555") {
		t.Errorf("CreateContainer with an unknown field: %v; want PermissionDenied naming config.#555", err)
	}
	if up := e.fake.LastCreate(); up != nil {
		t.Errorf("runtime saw the create: %v", up)
	}

	// The same requests without the unknown field pass.
	if _, err := e.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "reg.example/app:1"}}); err != nil {
		t.Errorf("clean PullImage: %v", err)
	}
	if _, err := e.rt().CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "pod1",
		Config: &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: "reg.example/app:1"}}}); err != nil {
		t.Errorf("clean CreateContainer: %v", err)
	}

	// Without a guard nothing is judged: unknown fields pass as raw bytes.
	plain := startProxy(t, Options{}, true)
	spec2 := &runtimeapi.ImageSpec{Image: "reg.example/app:1"}
	withUnknown(spec2, 31)
	if _, err := plain.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec2}); err != nil {
		t.Errorf("pass-through PullImage with an unknown field: %v", err)
	}
	if got := UnknownField(plain.fake.LastPull()); got != "image.#31" {
		t.Errorf("pass-through runtime saw unknown field %q, want image.#31 kept", got)
	}
}

// With a Guard, runtime.v1 methods newer than the compiled cri-api are refused
// (they could pull or run around it); without one they pass (TestUnknownBidiStream).
func TestUnknownMethodRefusedWithGuard(t *testing.T) {
	e := startProxy(t, Options{Guard: refuseAll{}}, true)
	ctx := testCtx(t)
	for _, method := range []string{"/runtime.v1.RuntimeService/FutureMethod", "/runtime.v1.ImageService/PullImageWithProgress", "/runtime.v1.FutureService/Echo"} {
		t.Run(method, func(t *testing.T) {
			before := e.fake.callCount()
			_, _, _, err := rawCall(ctx, e.proxy, method, []byte{})
			if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "cri-api") {
				t.Errorf("%s through a guarded proxy: %v; want Unimplemented naming the cri-api", method, err)
			}
			if n := e.fake.callCount() - before; n != 0 {
				t.Errorf("upstream saw %d calls", n)
			}
		})
	}
	// Known methods still pass.
	if _, err := e.rt().Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("Version through a guarded proxy: %v", err)
	}
}

// BenchmarkUnknownField: the walk every judged request pays, on a
// CreateContainerRequest shaped like kubelet's (sandbox config, mounts, envs,
// labels, annotations, security context).
func BenchmarkUnknownField(b *testing.B) {
	kv := func(n int) []*runtimeapi.KeyValue {
		var out []*runtimeapi.KeyValue
		for i := range n {
			out = append(out, &runtimeapi.KeyValue{Key: "K" + string(rune('A'+i)), Value: []byte("value")})
		}
		return out
	}
	labels := map[string]string{"io.kubernetes.pod.name": "api", "io.kubernetes.pod.namespace": "team", "io.kubernetes.container.name": "main"}
	req := &runtimeapi.CreateContainerRequest{
		PodSandboxId: "0123456789abcdef",
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
			Image:    &runtimeapi.ImageSpec{Image: "sha256:0123", UserSpecifiedImage: "registry.example/team/app:1.0"},
			Command:  []string{"/app"}, Args: []string{"--serve"},
			Envs:   kv(20),
			Mounts: []*runtimeapi.Mount{{ContainerPath: "/etc/hosts", HostPath: "/var/lib/kubelet/pods/x/etc-hosts"}, {ContainerPath: "/dev/termination-log", HostPath: "/var/lib/kubelet/pods/x/containers/main/0"}, {ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", HostPath: "/var/lib/kubelet/pods/x/volumes/token", Readonly: true}},
			Labels: labels, Annotations: labels,
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources:       &runtimeapi.LinuxContainerResources{CpuShares: 102, MemoryLimitInBytes: 1 << 28},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}, RunAsUser: &runtimeapi.Int64Value{Value: 1000}, MaskedPaths: []string{"/proc/kcore", "/proc/keys"}},
			},
		},
		SandboxConfig: &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "api", Namespace: "team", Uid: "uid"},
			Labels:   labels, Annotations: labels,
			Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD}}},
		},
	}
	b.Run("walk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if UnknownField(req) != "" {
				b.Fatal("unexpected unknown field")
			}
		}
	})
	// For scale: what gRPC itself pays to decode the same request.
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(raw, new(runtimeapi.CreateContainerRequest)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRefusalsCounted: every refusal made before a policy decision is counted
// by the server itself, by reason (criguard_refused_requests_total), with a
// Guard or without one.
func TestRefusalsCounted(t *testing.T) {
	pass := funcGuard{
		pull: func(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
			return next(ctx, r)
		},
	}
	for _, tc := range []struct {
		name  string
		guard Guard
		want  map[string]float64
	}{
		{"guard", pass, map[string]float64{RefusedUnknownField: 1, RefusedUnknownMethod: 1, RefusedNotCRIv1: 1}},
		// Without a Guard nothing is judged: unknown fields and newer runtime.v1
		// methods pass, but other services are still refused, and counted.
		{"no guard", nil, map[string]float64{RefusedUnknownField: 0, RefusedUnknownMethod: 0, RefusedNotCRIv1: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics(prometheus.NewRegistry())
			e := startProxy(t, Options{Guard: tc.guard, Metrics: m}, true)
			ctx := testCtx(t)
			spec := &runtimeapi.ImageSpec{Image: "reg.example/app:1"}
			withUnknown(spec, 31)
			_, _ = e.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec})
			for _, method := range []string{"/runtime.v1.RuntimeService/FutureMethod", "/containerd.services.images.v1.Images/List"} {
				_, _, _, _ = rawCall(ctx, e.proxy, method, []byte{})
			}
			if _, err := e.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "reg.example/app:1"}}); err != nil {
				t.Fatalf("clean PullImage: %v", err)
			}
			for reason, want := range tc.want {
				if got := testutil.ToFloat64(m.refusals.WithLabelValues(reason)); got != want {
					t.Errorf("criguard_refused_requests_total{reason=%s} = %v, want %v", reason, got, want)
				}
			}
		})
	}
}
