package enforce

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/imageref"
	"github.com/criguard/criguard/verifier/policy"
)

// fakeJudge answers with decide and records every input.
type fakeJudge struct {
	mu     sync.Mutex
	inputs []policy.Input
	decide func(policy.Input) policy.Decision
}

func (j *fakeJudge) Evaluate(_ context.Context, in policy.Input) policy.Decision {
	j.mu.Lock()
	j.inputs = append(j.inputs, in)
	j.mu.Unlock()
	return j.decide(in)
}

// allowAs allows every image, resolving tags to dg.
func allowAs(dg string) func(policy.Input) policy.Decision {
	return func(in policy.Input) policy.Decision {
		d := in.Digest
		if d == "" && !in.Local {
			d = dg
		}
		return policy.Decision{Allowed: true, Image: in.Image, Digest: d, Policy: "p", Rule: "r"}
	}
}

func denyAll(in policy.Input) policy.Decision {
	d := in.Digest
	if d == "" {
		d = dgA
	}
	return policy.Decision{Image: in.Image, Digest: d, Policy: "default", Rule: "team", Reason: "no signature verified with key team"}
}

type fakeTagger struct {
	calls  [][2]string
	err    error
	images *fakeImages // when set, a tag is served at once, as image imID
}

func (f *fakeTagger) Tag(_ context.Context, tagRef, digestRef string) error {
	f.calls = append(f.calls, [2]string{tagRef, digestRef})
	if f.err == nil && f.images != nil {
		f.images.images[tagRef] = &runtimeapi.Image{Id: imID}
	}
	return f.err
}

// fakeImages answers ImageStatus from a map keyed by the image asked for.
type fakeImages struct {
	images map[string]*runtimeapi.Image
	err    error
	asked  []string
}

func (f *fakeImages) ImageStatus(_ context.Context, in *runtimeapi.ImageStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	f.asked = append(f.asked, in.GetImage().GetImage())
	if f.err != nil {
		return nil, f.err
	}
	return &runtimeapi.ImageStatusResponse{Image: f.images[in.GetImage().GetImage()]}, nil
}

// fakeSandboxes is containerd's record of pod sandboxes, by ID.
type fakeSandboxes struct {
	pods  map[string]*runtimeapi.PodSandboxMetadata
	asked []string
}

func (f *fakeSandboxes) PodSandboxStatus(_ context.Context, in *runtimeapi.PodSandboxStatusRequest, _ ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.asked = append(f.asked, in.GetPodSandboxId())
	m, ok := f.pods[in.GetPodSandboxId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "an error occurred when try to find sandbox %q: not found", in.GetPodSandboxId())
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: in.GetPodSandboxId(), Metadata: m}}, nil
}

// newFakeSandboxes knows the sandboxes the tests' requests name: "sb" is
// team-b/api (createReq), "sb-a" team-a/web (pullReq's pod).
func newFakeSandboxes() *fakeSandboxes {
	return &fakeSandboxes{pods: map[string]*runtimeapi.PodSandboxMetadata{
		"sb":   sandbox("team-b", "api").Metadata,
		"sb-a": sandbox("team-a", "web").Metadata,
	}}
}

type rig struct {
	e         *Enforcer
	judge     *fakeJudge
	tagger    *fakeTagger
	images    *fakeImages
	sandboxes *fakeSandboxes
	metrics   *Metrics
	logs      *bytes.Buffer
}

func newRig(t *testing.T, decide func(policy.Input) policy.Decision) *rig {
	t.Helper()
	r := &rig{judge: &fakeJudge{decide: decide}, images: &fakeImages{images: map[string]*runtimeapi.Image{}}, sandboxes: newFakeSandboxes(),
		metrics: NewMetrics(prometheus.NewRegistry()), logs: &bytes.Buffer{}}
	r.tagger = &fakeTagger{images: r.images}
	e, err := New(Options{
		Judge: r.judge, Images: r.images, Sandboxes: r.sandboxes, Tagger: r.tagger, Metrics: r.metrics,
		Logger: slog.New(slog.NewJSONHandler(r.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	return r
}

func (r *rig) decisions(t *testing.T, op, result string) float64 {
	return counterValue(t, r.metrics.decisions.WithLabelValues(op, result))
}

// counterValue reads a counter (prometheus' testutil would need a module this
// project does not pin).
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func sandbox(ns, pod string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: pod, Namespace: ns, Uid: "u"}}
}

func pullReq(image string, auth *runtimeapi.AuthConfig) *runtimeapi.PullImageRequest {
	return &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth, SandboxConfig: sandbox("team-a", "web")}
}

// recordingPull returns a next that records what was forwarded.
func recordingPull(got **runtimeapi.PullImageRequest) forward.PullFunc {
	return func(_ context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
		*got = r
		return &runtimeapi.PullImageResponse{ImageRef: imID}, nil
	}
}

func TestPullImage(t *testing.T) {
	tests := []struct {
		name       string
		image      string
		decide     func(policy.Input) policy.Decision
		wantInput  policy.Input // Operation/Image/Digest/Namespace/Pod checked
		wantPulled string       // "" means next must not be called
		wantTag    [2]string    // zero means no tag
		wantCode   codes.Code
		wantMsg    []string
		wantResult string
	}{
		{
			name: "tag allowed: digest pulled, tag recorded", image: reg + "/team/app:1.0", decide: allowAs(dgA),
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app:1.0", Namespace: "team-a", Pod: "web"},
			wantPulled: reg + "/team/app@" + dgA, wantTag: [2]string{reg + "/team/app:1.0", reg + "/team/app@" + dgA},
			wantResult: ResultAllow,
		},
		{
			name: "docker hub short name normalized, implicit latest tagged", image: "busybox", decide: allowAs(dgB),
			wantInput:  policy.Input{Operation: OpPullImage, Image: "busybox", Namespace: "team-a", Pod: "web"},
			wantPulled: "docker.io/library/busybox@" + dgB, wantTag: [2]string{"docker.io/library/busybox:latest", "docker.io/library/busybox@" + dgB},
			wantResult: ResultAllow,
		},
		{
			name: "digest pinned: judged as pinned, no tag", image: reg + "/team/app@" + dgA, decide: allowAs(dgB),
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app@" + dgA, Digest: dgA, Namespace: "team-a", Pod: "web"},
			wantPulled: reg + "/team/app@" + dgA, wantResult: ResultAllow,
		},
		{
			name: "tag and digest: the digest wins, no tag moved", image: reg + "/team/app:1.0@" + dgA, decide: allowAs(dgB),
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app:1.0@" + dgA, Digest: dgA, Namespace: "team-a", Pod: "web"},
			wantPulled: reg + "/team/app@" + dgA, wantResult: ResultAllow,
		},
		{
			name: "denied: Unknown with the kubelet prefix, nothing pulled", image: reg + "/team/app:1.0", decide: denyAll,
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app:1.0", Namespace: "team-a", Pod: "web"},
			wantCode:   codes.Unknown,
			wantMsg:    []string{"SignatureValidationFailed: ", reg + "/team/app:1.0", dgA, "policy default", "rule team", "no signature verified with key team"},
			wantResult: ResultDeny,
		},
		{
			name: "audit: would-deny lets the pull through", image: reg + "/team/app:1.0",
			decide: func(in policy.Input) policy.Decision {
				d := denyAll(in)
				d.Allowed, d.Audited = true, true
				return d
			},
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app:1.0", Namespace: "team-a", Pod: "web"},
			wantPulled: reg + "/team/app@" + dgA, wantTag: [2]string{reg + "/team/app:1.0", reg + "/team/app@" + dgA},
			wantResult: ResultAudit,
		},
		{
			name: "failed open: counted apart", image: reg + "/team/app:1.0",
			decide: func(in policy.Input) policy.Decision {
				d := allowAs(dgA)(in)
				d.Audited, d.FailedOpen = true, true
				return d
			},
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app:1.0", Namespace: "team-a", Pod: "web"},
			wantPulled: reg + "/team/app@" + dgA, wantTag: [2]string{reg + "/team/app:1.0", reg + "/team/app@" + dgA},
			wantResult: ResultFailedOpen,
		},
		{
			// Nothing was verified (the tag did not resolve, an Allow rule or
			// Audit let it through): there is no digest to pin.
			name: "allow without digest forwards the request as is", image: reg + "/team/app:1.0",
			decide: func(in policy.Input) policy.Decision {
				return policy.Decision{Allowed: true, Audited: true, Image: in.Image}
			},
			wantInput:  policy.Input{Operation: OpPullImage, Image: reg + "/team/app:1.0", Namespace: "team-a", Pod: "web"},
			wantPulled: reg + "/team/app:1.0", wantResult: ResultAudit,
		},
		{
			name: "image ID is not pullable", image: imID, decide: allowAs(dgA),
			wantCode: codes.Unknown, wantMsg: []string{"SignatureValidationFailed: ", "image ID"}, wantResult: ResultDeny,
		},
		{
			name: "invalid reference", image: "UPPER/Case:x", decide: allowAs(dgA),
			wantCode: codes.Unknown, wantMsg: []string{"SignatureValidationFailed: ", `image reference "UPPER/Case:x" is not valid`}, wantResult: ResultDeny,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.decide)
			var pulled *runtimeapi.PullImageRequest
			req := pullReq(tc.image, nil)
			resp, err := r.e.PullImage(context.Background(), req, recordingPull(&pulled))
			if tc.wantInput.Operation != "" {
				if len(r.judge.inputs) != 1 {
					t.Fatalf("judge called %d times, want 1", len(r.judge.inputs))
				}
				want := tc.wantInput
				ref, err := imageref.Parse(want.Image)
				if err != nil {
					t.Fatal(err)
				}
				want.Ref = ref // the reference is parsed once, here, and handed on
				if got := r.judge.inputs[0]; got != want {
					t.Errorf("judge input = %+v, want %+v", got, want)
				}
			} else if len(r.judge.inputs) != 0 {
				t.Errorf("judge called for an unparsable reference: %+v", r.judge.inputs)
			}
			if tc.wantPulled == "" {
				if pulled != nil {
					t.Fatalf("next was called with %q on a denial", pulled.GetImage().GetImage())
				}
				if status.Code(err) != tc.wantCode {
					t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tc.wantCode)
				}
				msg := status.Convert(err).Message()
				if !strings.HasPrefix(msg, forward.DeniedPrefix) {
					t.Errorf("message %q lacks prefix %q", msg, forward.DeniedPrefix)
				}
				for _, w := range tc.wantMsg {
					if !strings.Contains(msg, w) {
						t.Errorf("message %q lacks %q", msg, w)
					}
				}
				if len(r.tagger.calls) != 0 {
					t.Errorf("tagged on denial: %v", r.tagger.calls)
				}
			} else {
				if err != nil {
					t.Fatalf("PullImage: %v", err)
				}
				if pulled == nil || pulled.GetImage().GetImage() != tc.wantPulled {
					t.Fatalf("forwarded %v, want %q", pulled.GetImage(), tc.wantPulled)
				}
				if req.GetImage().GetImage() != tc.image {
					t.Errorf("caller's request was modified: %q", req.GetImage().GetImage())
				}
				if resp.GetImageRef() != imID {
					t.Errorf("image_ref = %q, want containerd's %q", resp.GetImageRef(), imID)
				}
				var wantCalls [][2]string
				if tc.wantTag != [2]string{} {
					wantCalls = [][2]string{tc.wantTag}
				}
				if len(r.tagger.calls) != len(wantCalls) || (len(wantCalls) == 1 && r.tagger.calls[0] != wantCalls[0]) {
					t.Errorf("tag calls = %v, want %v", r.tagger.calls, wantCalls)
				}
			}
			if got := r.decisions(t, OpPullImage, tc.wantResult); got != 1 {
				t.Errorf("decisions{PullImage,%s} = %v, want 1", tc.wantResult, got)
			}
			if !strings.Contains(r.logs.String(), `"decision":"`+tc.wantResult+`"`) {
				t.Errorf("no decision log line with %s: %s", tc.wantResult, r.logs)
			}
		})
	}
}

func TestPullImageUpstreamAndTagErrors(t *testing.T) {
	r := newRig(t, allowAs(dgA))
	upErr := status.Error(codes.NotFound, "manifest unknown")
	_, err := r.e.PullImage(context.Background(), pullReq(reg+"/team/app:1.0", nil),
		func(context.Context, *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
			return nil, upErr
		})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "manifest unknown" {
		t.Errorf("upstream error not passed through unchanged: %v", err)
	}
	if len(r.tagger.calls) != 0 {
		t.Errorf("tagged after a failed pull")
	}
	if got := counterValue(t, r.metrics.upstreamErrors.WithLabelValues(OpPullImage)); got != 1 {
		t.Errorf("upstream errors = %v, want 1", got)
	}

	r.tagger.err = errors.New("containerd gone")
	var pulled *runtimeapi.PullImageRequest
	_, err = r.e.PullImage(context.Background(), pullReq(reg+"/team/app:1.0", nil), recordingPull(&pulled))
	if err == nil || !strings.Contains(err.Error(), "could not tag") {
		t.Errorf("tag failure not reported: %v", err)
	}
	if got := counterValue(t, r.metrics.upstreamErrors.WithLabelValues(opTag)); got != 1 {
		t.Errorf("tag errors = %v, want 1", got)
	}
}

// Credentials kubelet sent with an allowed pull are used to verify the same
// namespace's later creates, and never another namespace's; a denied or failed
// pull's credentials are not remembered at all.
func TestCredentialsRememberedForCreate(t *testing.T) {
	r := newRig(t, allowAs(dgA))
	auth := &runtimeapi.AuthConfig{Username: "robot", Password: "s3cr3t-pw", ServerAddress: reg}
	var pulled *runtimeapi.PullImageRequest
	if _, err := r.e.PullImage(context.Background(), pullReq(reg+"/team/app:1.0", auth), recordingPull(&pulled)); err != nil {
		t.Fatal(err)
	}
	want := cosign.Auth{Username: "robot", Password: "s3cr3t-pw"}
	if got := r.judge.inputs[0].Auth; got == nil || *got != want {
		t.Fatalf("pull judged with auth %+v, want %+v", got, want)
	}
	if pulled.GetAuth().GetPassword() != "s3cr3t-pw" {
		t.Errorf("credentials not forwarded to containerd")
	}
	// A later pull without credentials does not forget them (kubelet sends none
	// for pods without pull secrets).
	if _, err := r.e.PullImage(context.Background(), pullReq(reg+"/team/app:1.0", nil), recordingPull(&pulled)); err != nil {
		t.Fatal(err)
	}
	// Another namespace's pull with a wrong secret is refused upstream: it
	// must not replace team-a's, nor be kept for its own namespace.
	bad := pullReq(reg+"/team/app:1.0", &runtimeapi.AuthConfig{Username: "robot", Password: "wrong"})
	bad.SandboxConfig = sandbox("team-c", "x")
	if _, err := r.e.PullImage(context.Background(), bad, func(context.Context, *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
		return nil, status.Error(codes.Unknown, "401 Unauthorized")
	}); err == nil {
		t.Fatal("pull whose upstream failed succeeded")
	}
	r.sandboxes.pods["sb-c"] = sandbox("team-c", "x").Metadata

	r.images.images[imID] = &runtimeapi.Image{Id: imID, RepoTags: []string{reg + "/team/app:1.0"}, RepoDigests: []string{reg + "/team/app@" + dgA}}
	r.images.images["docker.io/library/other:1"] = &runtimeapi.Image{Id: imID, RepoDigests: []string{"docker.io/library/other@" + dgB}}
	for _, tc := range []struct {
		name, sandbox, image, asked string
		want                        *cosign.Auth
	}{
		{"same namespace", "sb-a", imID, reg + "/team/app:1.0", &want},
		{"another registry", "sb-a", "docker.io/library/other:1", "", nil},
		{"another namespace", "sb", imID, reg + "/team/app:1.0", nil},
		{"namespace whose pull failed", "sb-c", imID, reg + "/team/app:1.0", nil},
	} {
		r.judge.inputs = nil
		req := createReq(tc.image, tc.asked)
		req.PodSandboxId = tc.sandbox
		req.SandboxConfig = &runtimeapi.PodSandboxConfig{Metadata: r.sandboxes.pods[tc.sandbox]}
		if _, err := r.e.CreateContainer(context.Background(), req, okCreate(nil)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := r.judge.inputs[0].Auth
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("%s: create of %s judged with auth %+v, want %+v", tc.name, tc.image, got, tc.want)
		}
	}
	if strings.Contains(r.logs.String(), "s3cr3t-pw") {
		t.Errorf("a password reached the logs: %s", r.logs)
	}
}

// The namespace a container is judged in is its sandbox's, learnt from
// RunPodSandbox (or containerd's PodSandboxStatus after a restart); a request
// whose sandbox_config claims another namespace is refused (issue: a create into
// a prod sandbox carrying a dev config was judged as dev).
func TestCreateJudgedInSandboxNamespace(t *testing.T) {
	r := newRig(t, func(in policy.Input) policy.Decision {
		return policy.Decision{Allowed: in.Namespace == "dev", Digest: dgA, Image: in.Image, Reason: "only dev may run it"}
	})
	r.images.images[imID] = &runtimeapi.Image{Id: imID, RepoTags: []string{reg + "/team/app:1.0"}, RepoDigests: []string{reg + "/team/app@" + dgA}}
	// RunPodSandbox through the Enforcer: containerd answers with the ID.
	for id, ns := range map[string]string{"sb-prod": "prod", "sb-dev": "dev"} {
		_, err := r.e.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: sandbox(ns, "web")},
			func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
				return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A sandbox that failed to start is not remembered.
	_, _ = r.e.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: sandbox("dev", "x")},
		func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
			return nil, status.Error(codes.Unknown, "failed")
		})
	r.sandboxes.pods["sb-old"] = sandbox("dev", "old").Metadata // created before criguard started
	for _, tc := range []struct {
		name, sandbox, claimedNS string
		wantCode                 codes.Code
		wantMsg                  string
		wantLookups              int
	}{
		{"dev sandbox, dev config", "sb-dev", "dev", codes.OK, "", 0},
		{"prod sandbox claiming dev", "sb-prod", "dev", codes.PermissionDenied, `names namespace "dev" but pod sandbox sb-prod belongs to namespace "prod"`, 0},
		{"prod sandbox, prod config", "sb-prod", "prod", codes.PermissionDenied, "only dev may run it", 0},
		{"sandbox from before a restart", "sb-old", "dev", codes.OK, "", 1},
		{"unknown sandbox", "sb-none", "dev", codes.NotFound, "sb-none", 1},
		{"no sandbox ID", "", "dev", codes.PermissionDenied, "names no pod sandbox", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.sandboxes.asked = nil
			req := createReq(imID, reg+"/team/app:1.0")
			req.PodSandboxId = tc.sandbox
			req.SandboxConfig = sandbox(tc.claimedNS, "web")
			created := false
			_, err := r.e.CreateContainer(context.Background(), req, okCreate(&created))
			st := status.Convert(err)
			if st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantMsg) {
				t.Errorf("create: %v, want %v %q", err, tc.wantCode, tc.wantMsg)
			}
			if created != (tc.wantCode == codes.OK) {
				t.Errorf("reached containerd: %v", created)
			}
			if len(r.sandboxes.asked) != tc.wantLookups {
				t.Errorf("PodSandboxStatus calls %v, want %d", r.sandboxes.asked, tc.wantLookups)
			}
		})
	}
	// The sandbox looked up once is remembered.
	r.sandboxes.asked = nil
	req := createReq(imID, reg+"/team/app:1.0")
	req.PodSandboxId, req.SandboxConfig = "sb-old", sandbox("dev", "old")
	if _, err := r.e.CreateContainer(context.Background(), req, okCreate(nil)); err != nil || len(r.sandboxes.asked) != 0 {
		t.Errorf("second create in sb-old: %v, lookups %v", err, r.sandboxes.asked)
	}
}

func createReq(image, asked string, volumes ...*runtimeapi.ImageSpec) *runtimeapi.CreateContainerRequest {
	cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: asked}}
	for i, v := range volumes {
		cfg.Mounts = append(cfg.Mounts, &runtimeapi.Mount{ContainerPath: "/v" + string(rune('0'+i)), Image: v})
	}
	return &runtimeapi.CreateContainerRequest{PodSandboxId: "sb", Config: cfg, SandboxConfig: sandbox("team-b", "api")}
}

func okCreate(called *bool) forward.CreateFunc {
	return func(context.Context, *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
		if called != nil {
			*called = true
		}
		return &runtimeapi.CreateContainerResponse{ContainerId: "cid"}, nil
	}
}

func TestCreateContainer(t *testing.T) {
	app := &runtimeapi.Image{Id: imID, RepoTags: []string{reg + "/team/app:1.0"}, RepoDigests: []string{reg + "/team/app@" + dgA}}
	twoRepos := &runtimeapi.Image{Id: imID, RepoTags: []string{reg + "/team/app:1.0", reg + "/other/app:2"},
		RepoDigests: []string{reg + "/team/app@" + dgA, reg + "/other/app@" + dgB}}
	local := &runtimeapi.Image{Id: imID, RepoTags: []string{"docker.io/library/imported:1"}}
	const dataID = "sha256:4444444444444444444444444444444444444444444444444444444444444444"
	denyOther := func(in policy.Input) policy.Decision {
		if strings.Contains(in.Image, "/other/") {
			return denyAll(in)
		}
		return allowAs("")(in)
	}
	allowLocalOnly := func(in policy.Input) policy.Decision {
		if in.Local {
			return policy.Decision{Allowed: true, Image: in.Image, Rule: "side-loaded"}
		}
		return denyAll(in)
	}
	type want struct {
		Image  string
		Digest string
		Local  bool
	}
	tests := []struct {
		name     string
		images   map[string]*runtimeapi.Image
		req      *runtimeapi.CreateContainerRequest
		decide   func(policy.Input) policy.Decision
		want     []want // judge inputs, in order
		wantCode codes.Code
		wantMsg  []string
	}{
		{
			name: "image ID with user_specified_image: that repository's digest judged", images: map[string]*runtimeapi.Image{imID: app},
			req: createReq(imID, reg+"/team/app:1.0"), decide: allowAs(""),
			want: []want{{reg + "/team/app:1.0", dgA, false}},
		},
		{
			name: "denied: PermissionDenied with the prefix", images: map[string]*runtimeapi.Image{imID: app},
			req: createReq(imID, reg+"/team/app:1.0"), decide: denyAll,
			want: []want{{reg + "/team/app:1.0", dgA, false}}, wantCode: codes.PermissionDenied,
			wantMsg: []string{"SignatureValidationFailed: ", dgA, "policy default", "rule team", "no signature verified"},
		},
		{
			name: "asked repository judged, not the other names of the image", images: map[string]*runtimeapi.Image{imID: twoRepos},
			req: createReq(imID, reg+"/team/app:1.0"), decide: denyOther,
			want: []want{{reg + "/team/app:1.0", dgA, false}},
		},
		{
			name: "asked repository denied even if another name would pass", images: map[string]*runtimeapi.Image{imID: twoRepos},
			req: createReq(imID, reg+"/other/app:2"), decide: denyOther,
			want: []want{{reg + "/other/app:2", dgB, false}}, wantCode: codes.PermissionDenied, wantMsg: []string{dgB},
		},
		{
			name: "reference as config.image names the repository", images: map[string]*runtimeapi.Image{reg + "/team/app:1.0": app},
			req: createReq(reg+"/team/app:1.0", ""), decide: allowAs(""),
			want: []want{{reg + "/team/app:1.0", dgA, false}},
		},
		{
			name: "image ID alone: every repository must allow", images: map[string]*runtimeapi.Image{imID: twoRepos},
			req: createReq(imID, ""), decide: denyOther,
			want: []want{{reg + "/team/app:1.0", dgA, false}, {reg + "/other/app:2", dgB, false}}, wantCode: codes.PermissionDenied,
		},
		{
			name: "no repository digest: judged as local", images: map[string]*runtimeapi.Image{imID: local},
			req: createReq(imID, "imported:1"), decide: denyAll,
			want: []want{{"imported:1", "", true}}, wantCode: codes.PermissionDenied,
		},
		{
			name: "local allowed by an Allow rule", images: map[string]*runtimeapi.Image{imID: local},
			req: createReq(imID, ""), decide: allowLocalOnly,
			want: []want{{"docker.io/library/imported:1", "", true}},
		},
		{
			name: "asked repository has no digest though another has: local",
			images: map[string]*runtimeapi.Image{imID: {Id: imID, RepoTags: []string{reg + "/team/app:1.0", "docker.io/retagged/app:1"},
				RepoDigests: []string{reg + "/team/app@" + dgA}}},
			req: createReq(imID, "retagged/app:1"), decide: allowLocalOnly,
			want: []want{{"retagged/app:1", "", true}},
		},
		{
			// A client pairs an image's ID with the name of a repository an
			// Allow rule admits; containerd knows the image by no such name.
			name: "claimed name containerd does not know: the image's own names judged", images: map[string]*runtimeapi.Image{imID: app},
			req: createReq(imID, reg+"/allowed/app:1"), decide: allowLocalOnly,
			want: []want{{reg + "/team/app:1.0", dgA, false}}, wantCode: codes.PermissionDenied,
		},
		{
			name: "claimed tag the image does not carry: the image's own names judged", images: map[string]*runtimeapi.Image{imID: app},
			req: createReq(imID, reg+"/team/app:2.0"), decide: allowAs(""),
			want: []want{{reg + "/team/app:1.0", dgA, false}},
		},
		{
			name: "claimed digest the image does not have: the image's own names judged", images: map[string]*runtimeapi.Image{imID: app},
			req: createReq(imID, reg+"/team/app@"+dgB), decide: allowAs(""),
			want: []want{{reg + "/team/app:1.0", dgA, false}},
		},
		{
			name: "no claim: digest-less tags are judged too, as local",
			images: map[string]*runtimeapi.Image{imID: {Id: imID, RepoTags: []string{reg + "/team/app:1.0", "local.example/x:1"},
				RepoDigests: []string{reg + "/team/app@" + dgA}}},
			req: createReq(imID, ""), decide: allowAs(""),
			want: []want{{reg + "/team/app:1.0", dgA, false}, {"local.example/x:1", "", true}},
		},
		{
			name:   "asked digest among several of one repository: that one judged",
			images: map[string]*runtimeapi.Image{imID: {Id: imID, RepoDigests: []string{reg + "/team/app@" + dgA, reg + "/team/app@" + dgB}}},
			req:    createReq(imID, reg+"/team/app@"+dgB), decide: allowAs(""),
			want: []want{{reg + "/team/app@" + dgB, dgB, false}},
		},
		{
			name:   "several digests of the asked repository: any allowing suffices",
			images: map[string]*runtimeapi.Image{imID: {Id: imID, RepoTags: []string{reg + "/team/app:1.0"}, RepoDigests: []string{reg + "/team/app@" + dgA, reg + "/team/app@" + dgB}}},
			req:    createReq(imID, reg+"/team/app:1.0"),
			decide: func(in policy.Input) policy.Decision {
				if in.Digest == dgB {
					return allowAs("")(in)
				}
				return denyAll(in)
			},
			want: []want{{reg + "/team/app:1.0", dgA, false}, {reg + "/team/app:1.0", dgB, false}},
		},
		{
			name: "image volume by name: judged and pinned to its ID",
			images: map[string]*runtimeapi.Image{imID: app, reg + "/team/data:1": {Id: dataID, RepoTags: []string{reg + "/team/data:1"},
				RepoDigests: []string{reg + "/team/data@" + dgB}}},
			req:    createReq(imID, reg+"/team/app:1.0", &runtimeapi.ImageSpec{Image: reg + "/team/data:1"}),
			decide: allowAs(""),
			want:   []want{{reg + "/team/app:1.0", dgA, false}, {reg + "/team/data:1", dgB, false}},
		},
		{
			name: "image volume judged the same way", images: map[string]*runtimeapi.Image{imID: app, "vol": twoRepos},
			req:    createReq(imID, reg+"/team/app:1.0", &runtimeapi.ImageSpec{Image: "vol", UserSpecifiedImage: reg + "/other/app:2"}),
			decide: denyOther,
			want:   []want{{reg + "/team/app:1.0", dgA, false}, {reg + "/other/app:2", dgB, false}}, wantCode: codes.PermissionDenied,
		},
		{
			name: "image not on the node", images: map[string]*runtimeapi.Image{},
			req: createReq(imID, reg+"/team/app:1.0"), decide: allowAs(dgA), wantCode: codes.NotFound,
		},
		{
			name: "no image named", images: map[string]*runtimeapi.Image{},
			req: createReq("", ""), decide: allowAs(dgA), wantCode: codes.PermissionDenied,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.decide)
			r.images.images = tc.images
			called := false
			var forwarded *runtimeapi.CreateContainerRequest
			resp, err := r.e.CreateContainer(context.Background(), tc.req, func(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
				forwarded = req
				return okCreate(&called)(ctx, req)
			})
			// containerd is asked about the image exactly as the request names it.
			if img := tc.req.GetConfig().GetImage().GetImage(); img != "" && (len(r.images.asked) == 0 || r.images.asked[0] != img) {
				t.Errorf("ImageStatus asked for %v, want %q first", r.images.asked, img)
			}
			var got []want
			for _, in := range r.judge.inputs {
				if in.Operation != OpCreateContainer || in.Namespace != "team-b" || in.Pod != "api" {
					t.Errorf("input %+v: wrong operation or pod", in)
				}
				got = append(got, want{in.Image, in.Digest, in.Local})
			}
			if len(got) != len(tc.want) {
				t.Fatalf("judged %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("judged[%d] = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if tc.wantCode != codes.OK {
				if called {
					t.Fatal("next called on a refusal")
				}
				if status.Code(err) != tc.wantCode {
					t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tc.wantCode)
				}
				if tc.wantCode == codes.PermissionDenied && !strings.HasPrefix(status.Convert(err).Message(), forward.DeniedPrefix) {
					t.Errorf("message %q lacks the prefix", status.Convert(err).Message())
				}
				for _, w := range tc.wantMsg {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || !called || resp.GetContainerId() != "cid" {
				t.Fatalf("CreateContainer = %v, %v (next called %v)", resp, err, called)
			}
			// containerd gets the judged image's ID, never a name it could
			// resolve anew; the name the user asked for stays alongside.
			specs := []*runtimeapi.ImageSpec{tc.req.GetConfig().GetImage()}
			fwd := []*runtimeapi.ImageSpec{forwarded.GetConfig().GetImage()}
			for i, m := range tc.req.GetConfig().GetMounts() {
				specs = append(specs, m.GetImage())
				fwd = append(fwd, forwarded.GetConfig().GetMounts()[i].GetImage())
			}
			for i, sp := range specs {
				wantID := tc.images[sp.GetImage()].GetId()
				wantAsked := sp.GetUserSpecifiedImage()
				if wantAsked == "" && sp.GetImage() != wantID {
					wantAsked = sp.GetImage()
				}
				if fwd[i].GetImage() != wantID || fwd[i].GetUserSpecifiedImage() != wantAsked {
					t.Errorf("forwarded image %d = %q (asked %q), want %q (asked %q)", i, fwd[i].GetImage(), fwd[i].GetUserSpecifiedImage(), wantID, wantAsked)
				}
			}
			if sp := tc.req.GetConfig().GetImage(); sp.GetImage() != tc.images[sp.GetImage()].GetId() && forwarded == tc.req {
				t.Error("the caller's request was rewritten in place")
			}
		})
	}
}

func TestCreateContainerImageStatusError(t *testing.T) {
	r := newRig(t, allowAs(dgA))
	r.images.err = status.Error(codes.Unavailable, "connection refused")
	called := false
	_, err := r.e.CreateContainer(context.Background(), createReq(imID, ""), okCreate(&called))
	if called || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v (next called %v), want Unavailable and no create", err, called)
	}
	if len(r.judge.inputs) != 0 {
		t.Errorf("judged without knowing the image")
	}
	if got := counterValue(t, r.metrics.upstreamErrors.WithLabelValues(opImageStatus)); got != 1 {
		t.Errorf("upstream errors = %v", got)
	}
}

func TestCreateContainerMetrics(t *testing.T) {
	r := newRig(t, func(in policy.Input) policy.Decision {
		d := allowAs("")(in)
		d.Cached = true
		return d
	})
	r.images.images[imID] = &runtimeapi.Image{Id: imID, RepoDigests: []string{reg + "/team/app@" + dgA}}
	for range 3 {
		if _, err := r.e.CreateContainer(context.Background(), createReq(imID, reg+"/team/app:1.0"), okCreate(nil)); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.decisions(t, OpCreateContainer, ResultAllow); got != 3 {
		t.Errorf("allows = %v, want 3", got)
	}
	if got := counterValue(t, r.metrics.cacheHits.WithLabelValues(OpCreateContainer)); got != 3 {
		t.Errorf("cache hits = %v, want 3", got)
	}
	ch := make(chan prometheus.Metric, 16)
	r.metrics.verifyDuration.Collect(ch)
	close(ch)
	if n := len(ch); n != 0 {
		t.Errorf("cached decisions observed as verifications: %d series", n)
	}
	if got := strings.Count(r.logs.String(), `"cached":true`); got != 3 {
		t.Errorf("%d cached decision log lines, want 3", got)
	}
}

func TestNewEnforcerNeedsJudgeImagesAndSandboxes(t *testing.T) {
	if _, err := New(Options{Images: &fakeImages{}, Sandboxes: newFakeSandboxes()}); err == nil {
		t.Error("no judge accepted")
	}
	if _, err := New(Options{Judge: &fakeJudge{}, Sandboxes: newFakeSandboxes()}); err == nil {
		t.Error("no image service accepted")
	}
	if _, err := New(Options{Judge: &fakeJudge{}, Images: &fakeImages{}}); err == nil {
		t.Error("no sandbox service accepted")
	}
}

// lateImages serves an image only from the n-th ImageStatus call on, as
// containerd's CRI plugin serves a tag only once it has seen the image event.
type lateImages struct {
	n, calls int
}

func (l *lateImages) ImageStatus(_ context.Context, in *runtimeapi.ImageStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	l.calls++
	if l.n > 0 && l.calls >= l.n {
		return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: imID}}, nil
	}
	return &runtimeapi.ImageStatusResponse{}, nil
}

// TestPullImageWaitsUntilTagServed: PullImage returns once the CRI plugin serves
// the new tag (so `crictl pull` then `crictl create` by tag works), and returns
// anyway, without an error, when it does not within the bound.
func TestPullImageWaitsUntilTagServed(t *testing.T) {
	tests := []struct {
		name      string
		servedAt  int // ImageStatus call from which the tag is served; 0 never
		wait      time.Duration
		wantCalls int // ImageStatus calls made (minimum when never served)
	}{
		{"served at once", 1, time.Minute, 1},
		{"served on the fourth look", 4, time.Minute, 4},
		{"never served: returns after the bound", 0, 30 * time.Millisecond, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imgs := &lateImages{n: tt.servedAt}
			e, err := New(Options{Judge: &fakeJudge{decide: allowAs(dgA)}, Images: imgs, Sandboxes: newFakeSandboxes(), Tagger: &fakeTagger{}, TagVisibleTimeout: tt.wait})
			if err != nil {
				t.Fatal(err)
			}
			var got *runtimeapi.PullImageRequest
			resp, err := e.PullImage(context.Background(), pullReq(reg+"/team/app:1.0", nil), recordingPull(&got))
			if err != nil || resp.GetImageRef() != imID {
				t.Fatalf("PullImage = %v, %v; want the image ref and no error", resp, err)
			}
			if tt.servedAt > 0 && imgs.calls != tt.wantCalls {
				t.Errorf("ImageStatus calls = %d, want %d (stop as soon as the tag is served)", imgs.calls, tt.wantCalls)
			}
			if tt.servedAt == 0 && imgs.calls < tt.wantCalls {
				t.Errorf("ImageStatus calls = %d, want at least %d before giving up", imgs.calls, tt.wantCalls)
			}
		})
	}
}

// TestCreateContainerRemembersImageNames: kubelet's creates by image ID reuse
// the names containerd gave for that ID, so a verified image costs no
// ImageStatus round trip; a claim the remembered names do not hold, a denial, a
// create without a claim, or an expired entry asks containerd afresh.
func TestCreateContainerRemembersImageNames(t *testing.T) {
	app := &runtimeapi.Image{Id: imID, RepoTags: []string{reg + "/team/app:1.0"}, RepoDigests: []string{reg + "/team/app@" + dgA}}
	allowTeam := func(in policy.Input) policy.Decision {
		if strings.Contains(in.Image, "/team/") {
			return allowAs("")(in)
		}
		return denyAll(in)
	}
	type step struct {
		req       *runtimeapi.CreateContainerRequest
		decide    func(policy.Input) policy.Decision
		wantErr   bool
		wantAsked int // ImageStatus calls so far
	}
	tests := []struct {
		name  string
		ttl   time.Duration
		steps []step
	}{
		{"second create by ID and claim: no lookup", 0, []step{
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 1},
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 1},
		}},
		{"claim not among the remembered names: looked up afresh", 0, []step{
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 1},
			{createReq(imID, reg+"/other/app:2"), allowTeam, false, 2}, // not containerd's name either: the image's own names judged
		}},
		{"denial from remembered names: looked up afresh and recorded", 0, []step{
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 1},
			{createReq(imID, reg+"/team/app:1.0"), denyAll, true, 2},
		}},
		{"no claim: looked up every time", 0, []step{
			{createReq(imID, ""), allowTeam, false, 1},
			{createReq(imID, ""), allowTeam, false, 2},
		}},
		{"create by name: looked up every time (tags move)", 0, []step{
			{createReq(reg+"/team/app:1.0", ""), allowTeam, false, 1},
			{createReq(reg+"/team/app:1.0", ""), allowTeam, false, 2},
		}},
		{"disabled: looked up every time", -1, []step{
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 1},
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 2},
		}},
		{"expired: looked up again", time.Nanosecond, []step{
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 1},
			{createReq(imID, reg+"/team/app:1.0"), allowTeam, false, 2},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			judge := &fakeJudge{}
			images := &fakeImages{images: map[string]*runtimeapi.Image{imID: app, reg + "/team/app:1.0": app}}
			e, err := New(Options{Judge: judge, Images: images, Sandboxes: newFakeSandboxes(), ImageNamesTTL: tt.ttl})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				judge.decide = s.decide
				var got *runtimeapi.CreateContainerRequest
				_, err := e.CreateContainer(context.Background(), s.req, func(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
					got = r
					return &runtimeapi.CreateContainerResponse{ContainerId: "c"}, nil
				})
				if s.wantErr != (err != nil) {
					t.Fatalf("step %d: err = %v, want error %v", i, err, s.wantErr)
				}
				if err == nil && got.GetConfig().GetImage().GetImage() != imID {
					t.Errorf("step %d: containerd was handed %q, want the judged ID %s", i, got.GetConfig().GetImage().GetImage(), imID)
				}
				if len(images.asked) != s.wantAsked {
					t.Errorf("step %d: ImageStatus calls = %d %v, want %d", i, len(images.asked), images.asked, s.wantAsked)
				}
			}
		})
	}
}

// TestCreateContainerWithoutImageIDDenied: an image containerd reports without
// an ID cannot be pinned to what was judged, so it is refused, not run by name.
func TestCreateContainerWithoutImageIDDenied(t *testing.T) {
	r := newRig(t, allowAs(""))
	r.images.images[reg+"/team/app:1.0"] = &runtimeapi.Image{RepoTags: []string{reg + "/team/app:1.0"}, RepoDigests: []string{reg + "/team/app@" + dgA}}
	called := false
	_, err := r.e.CreateContainer(context.Background(), createReq(reg+"/team/app:1.0", ""), okCreate(&called))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no image ID") || called {
		t.Fatalf("CreateContainer of an image without ID: err=%v forwarded=%v; want PermissionDenied naming the missing ID, nothing forwarded", err, called)
	}
}

// TestCreateContainerReusesRememberedDenials: when the remembered names deny,
// the fresh lookup does not evaluate the same (name, digest) again (a second
// verification and registry round trip per kubelet retry, exactly when the
// registry is slow); it evaluates only what the remembered names did not, and
// a reused denial stays a denial.
func TestCreateContainerReusesRememberedDenials(t *testing.T) {
	const claim = reg + "/team/app:1.0"
	app := &runtimeapi.Image{Id: imID, RepoTags: []string{claim}, RepoDigests: []string{reg + "/team/app@" + dgA}}
	// The same content pulled since by a second digest of its repository.
	twoDigests := &runtimeapi.Image{Id: imID, RepoTags: []string{claim}, RepoDigests: []string{reg + "/team/app@" + dgA, reg + "/team/app@" + dgB}}
	allowB := func(in policy.Input) policy.Decision {
		if in.Digest == dgB {
			return allowAs("")(in)
		}
		return denyAll(in)
	}
	type evaluated struct{ image, digest string }
	tests := []struct {
		name     string
		fresh    *runtimeapi.Image // what containerd says when asked afresh
		decide   func(policy.Input) policy.Decision
		wantErr  bool
		wantEval []evaluated // Evaluate calls of the second create
	}{
		{"same names deny: each judged once", app, denyAll, true,
			[]evaluated{{claim, dgA}}},
		{"a new digest: only it is judged, and denies", twoDigests, denyAll, true,
			[]evaluated{{claim, dgA}, {claim, dgB}}},
		{"a new digest: only it is judged, and allows", twoDigests, allowB, false,
			[]evaluated{{claim, dgA}, {claim, dgB}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			judge := &fakeJudge{decide: allowAs("")}
			images := &fakeImages{images: map[string]*runtimeapi.Image{imID: app}}
			e, err := New(Options{Judge: judge, Images: images, Sandboxes: newFakeSandboxes()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.CreateContainer(context.Background(), createReq(imID, claim), okCreate(nil)); err != nil {
				t.Fatalf("first create (remembers the names): %v", err)
			}
			judge.inputs, judge.decide = nil, tt.decide
			images.images[imID] = tt.fresh
			called := false
			_, err = e.CreateContainer(context.Background(), createReq(imID, claim), okCreate(&called))
			if tt.wantErr != (err != nil) || called == tt.wantErr {
				t.Fatalf("second create: err = %v, forwarded = %v; want error %v", err, called, tt.wantErr)
			}
			if tt.wantErr && status.Code(err) != codes.PermissionDenied {
				t.Errorf("second create: code %v, want PermissionDenied", status.Code(err))
			}
			if len(images.asked) != 2 {
				t.Errorf("ImageStatus calls = %v, want 2 (the second create looked up afresh)", images.asked)
			}
			var got []evaluated
			for _, in := range judge.inputs {
				got = append(got, evaluated{in.Image, in.Digest})
			}
			if !slices.Equal(got, tt.wantEval) {
				t.Errorf("second create evaluated %v, want %v", got, tt.wantEval)
			}
		})
	}
}
