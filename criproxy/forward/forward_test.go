package forward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Unary calls come back byte for byte as the runtime sent them, whether the
// method is in the compiled cri-api, unknown to it, or not even protobuf.
func TestUnaryPassThroughBytes(t *testing.T) {
	e := startProxy(t, Options{}, true)
	ctx := testCtx(t)

	// A Version request with a field from "the future" (number 99): a proxy that
	// decoded and re-encoded with an old cri-api could drop or reorder it.
	versionReq := protowire.AppendTag(nil, 1, protowire.BytesType)
	versionReq = protowire.AppendString(versionReq, "v1")
	versionReq = protowire.AppendTag(versionReq, 99, protowire.BytesType)
	versionReq = protowire.AppendString(versionReq, "unknown-to-cri-api")

	future, err := proto.Marshal(wrapperspb.Bytes([]byte("payload")))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method string
		req          []byte
		wantResp     []byte // nil: must equal the direct answer
	}{
		{"known unary", runtimeapi.RuntimeService_Version_FullMethodName, versionReq, nil},
		{"unknown method of a known service", "/runtime.v1.RuntimeService/FutureMethod", future, nil},
		{"unknown service, not protobuf", "/runtime.v1.FutureService/Echo", []byte{0xff, 0xff, 0xff, 0x01}, []byte{0xff, 0xff, 0xff, 0x01}},
		{"unknown service, empty message", "/runtime.v1.FutureService/Echo", []byte{}, []byte{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(ctx, "x-test", tc.name)
			got, hdr, trl, err := rawCall(ctx, e.proxy, tc.method, tc.req)
			if err != nil {
				t.Fatalf("through proxy: %v", err)
			}
			want := tc.wantResp
			wantHdr, wantTrl := metadata.MD{}, metadata.MD{}
			if want == nil {
				var derr error
				want, wantHdr, wantTrl, derr = rawCall(ctx, e.direct, tc.method, tc.req)
				if derr != nil {
					t.Fatalf("direct: %v", derr)
				}
			}
			if !bytes.Equal(got, want) {
				t.Errorf("response bytes differ:\n proxy  %x\n direct %x", got, want)
			}
			if tc.wantResp == nil {
				for _, k := range []string{"x-up-header"} {
					if mdValue(hdr, k) != mdValue(wantHdr, k) {
						t.Errorf("header %s: proxy %q, direct %q", k, mdValue(hdr, k), mdValue(wantHdr, k))
					}
				}
				if mdValue(trl, "x-up-trailer") != mdValue(wantTrl, "x-up-trailer") {
					t.Errorf("trailer: proxy %v, direct %v", trl, wantTrl)
				}
			}
			if v := mdValue(e.fake.md(), "x-test"); v != tc.name {
				t.Errorf("upstream saw x-test=%q, want %q", v, tc.name)
			}
		})
	}
}

// Typed clients see what they would see from the runtime: values, header,
// trailer.
func TestUnaryTypedHeaderTrailer(t *testing.T) {
	e := startProxy(t, Options{}, true)
	var hdr, trl metadata.MD
	v, err := e.rt().Version(testCtx(t), &runtimeapi.VersionRequest{Version: "v1"}, grpc.Header(&hdr), grpc.Trailer(&trl))
	if err != nil {
		t.Fatal(err)
	}
	if v.GetRuntimeName() != "fake" || v.GetVersion() != "v1" {
		t.Errorf("version = %v", v)
	}
	if mdValue(hdr, "x-up-header") != "h1" || mdValue(trl, "x-up-trailer") != "t1" {
		t.Errorf("header %v trailer %v, want x-up-header=h1 and x-up-trailer=t1", hdr, trl)
	}
}

// Errors keep their code, message, details, header and trailer.
func TestStatusPassThrough(t *testing.T) {
	e := startProxy(t, Options{}, true)
	ctx := testCtx(t)
	call := func(conn *grpc.ClientConn) (*status.Status, metadata.MD, metadata.MD) {
		var hdr, trl metadata.MD
		_, err := runtimeapi.NewRuntimeServiceClient(conn).PodSandboxStatus(ctx,
			&runtimeapi.PodSandboxStatusRequest{PodSandboxId: "p1"}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err == nil {
			t.Fatal("PodSandboxStatus succeeded; the fake always fails it")
		}
		return status.Convert(err), hdr, trl
	}
	got, gotHdr, gotTrl := call(e.proxy)
	want, wantHdr, wantTrl := call(e.direct)
	if !proto.Equal(got.Proto(), want.Proto()) {
		t.Errorf("status through proxy %v, direct %v", got.Proto(), want.Proto())
	}
	if got.Code() != codes.NotFound || got.Message() != "sandbox p1 not found" || len(got.Details()) != 1 {
		t.Errorf("status = %v", got.Proto())
	}
	if d, ok := got.Details()[0].(*runtimeapi.ContainerFilter); !ok || d.GetId() != "detail-p1" {
		t.Errorf("detail = %v", got.Details())
	}
	if mdValue(gotHdr, "x-up-header") != mdValue(wantHdr, "x-up-header") || mdValue(gotTrl, "x-up-trailer") != mdValue(wantTrl, "x-up-trailer") ||
		mdValue(gotTrl, "x-up-trailer") != "err-t" {
		t.Errorf("proxy header %v trailer %v; direct header %v trailer %v", gotHdr, gotTrl, wantHdr, wantTrl)
	}
}

// A finite server stream arrives whole, in order, with its trailer.
func TestServerStreamPassThrough(t *testing.T) {
	e := startProxy(t, Options{}, true)
	st, err := e.rt().StreamContainers(testCtx(t), &runtimeapi.StreamContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %v: %v", ids, err)
		}
		ids = append(ids, m.GetContainers()[0].GetId())
	}
	if strings.Join(ids, ",") != "s-a,s-b,s-c" {
		t.Errorf("ids = %v, want s-a,s-b,s-c", ids)
	}
	if v := mdValue(st.Trailer(), "x-up-trailer"); v != "stream-t" {
		t.Errorf("trailer = %v", st.Trailer())
	}
}

// A watch's header arrives before its events, events flow as sent, and the
// caller leaving cancels the upstream call.
func TestWatchPassThroughAndCancel(t *testing.T) {
	e := startProxy(t, Options{}, true)
	ctx, cancel := context.WithCancel(testCtx(t))
	st, err := e.rt().GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := st.Header()
	if err != nil || mdValue(hdr, "x-up-header") != "events" {
		t.Fatalf("header = %v, %v", hdr, err)
	}
	for _, want := range []string{"e1", "e2"} {
		ev, err := st.Recv()
		if err != nil || ev.GetContainerId() != want {
			t.Fatalf("event = %v, %v; want %s", ev, err, want)
		}
	}
	cancel()
	select {
	case err := <-e.fake.blockedErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("upstream watch ended with %v, want canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("upstream watch still running 20s after the caller canceled")
	}
	if _, err := st.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v, want Canceled", err)
	}
}

// Cancellation and deadlines of unary calls reach the runtime.
func TestCancelAndDeadlinePropagate(t *testing.T) {
	tests := []struct {
		name     string
		ctx      func() (context.Context, context.CancelFunc)
		cancelAt bool    // cancel once the upstream call started
		wantUp   []error // how the upstream call may end
		wantCode codes.Code
	}{
		{"cancel", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, true, []error{context.Canceled}, codes.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
			// The proxy's timer fires a hair before the runtime's and cancels the
			// upstream call, so the runtime may see either.
		}, false, []error{context.DeadlineExceeded, context.Canceled}, codes.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, Options{}, true)
			ctx, cancel := tc.ctx()
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := e.rt().ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "c"})
				errc <- err
			}()
			select {
			case <-e.fake.started:
			case <-time.After(20 * time.Second):
				t.Fatal("call never reached the upstream")
			}
			if tc.cancelAt {
				cancel()
			}
			select {
			case err := <-e.fake.blockedErr:
				if !errors.Is(err, tc.wantUp[0]) && (len(tc.wantUp) == 1 || !errors.Is(err, tc.wantUp[1])) {
					t.Errorf("upstream call ended with %v, want %v", err, tc.wantUp)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("upstream call still running 20s after the caller's context ended")
			}
			if err := <-errc; status.Code(err) != tc.wantCode {
				t.Errorf("caller got %v, want %v", err, tc.wantCode)
			}
		})
	}
}

// The caller's deadline is the upstream call's deadline.
func TestDeadlineValuePropagates(t *testing.T) {
	e := startProxy(t, Options{}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	if _, err := e.rt().Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	e.fake.mu.Lock()
	up, ok := e.fake.deadline, e.fake.hasDL
	e.fake.mu.Unlock()
	if !ok {
		t.Fatal("upstream call had no deadline")
	}
	// grpc-timeout is re-derived at each hop, so the upstream deadline can only
	// be the same or slightly earlier, never later or far off.
	if up.After(dl.Add(10*time.Millisecond)) || up.Before(dl.Add(-5*time.Second)) {
		t.Errorf("upstream deadline %v, caller deadline %v", up, dl)
	}
}

// Messages near kubelet's 16 MiB limit pass both ways; larger ones are refused
// with ResourceExhausted, not a hang.
func TestLargeMessages(t *testing.T) {
	e := startProxy(t, Options{}, true)
	ctx := testCtx(t)
	big := strings.Repeat("x", 15<<20)
	resp, err := e.rt().ListContainers(ctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"echo": big}}})
	if err != nil {
		t.Fatalf("15 MiB ListContainers: %v", err)
	}
	if got := resp.GetContainers()[0].GetLabels()["echo"]; got != big {
		t.Errorf("echoed label has %d bytes, want %d", len(got), len(big))
	}
	raw := bytes.Repeat([]byte{0xfe}, 15<<20)
	got, _, _, err := rawCall(ctx, e.proxy, "/runtime.v1.FutureService/Echo", raw)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("15 MiB raw echo: %d bytes, %v", len(got), err)
	}
	tooBig := strings.Repeat("x", 17<<20)
	_, err = e.rt().ListContainers(ctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"echo": tooBig}}},
		grpc.MaxCallSendMsgSize(64<<20))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("17 MiB request: %v, want ResourceExhausted", err)
	}
}

// A method of unknown shape (bidirectional) is forwarded as a stream both ways.
func TestUnknownBidiStream(t *testing.T) {
	e := startProxy(t, Options{}, true)
	st, err := e.proxy.NewStream(testCtx(t), &bidiDesc, "/runtime.v1.FutureService/Chat", grpc.ForceCodecV2(newRawCodec()))
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		if err := st.SendMsg(&frame{buf: sliceBuf([]byte(msg))}); err != nil {
			t.Fatal(err)
		}
		var in frame
		if err := st.RecvMsg(&in); err != nil {
			t.Fatalf("reply to %s: %v", msg, err)
		}
		if got := string(in.buf.ReadOnlyData()); got != "re:"+msg {
			t.Errorf("reply %q, want %q", got, "re:"+msg)
		}
		in.release()
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var in frame
	if err := st.RecvMsg(&in); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	if v := mdValue(st.Trailer(), "x-up-trailer"); v != "chat-done" {
		t.Errorf("trailer = %v", st.Trailer())
	}
}

// Only CRI v1 is forwarded: the runtime's other APIs on the same socket, and
// the retired v1alpha2 CRI, would let a caller pull around the Guard.
func TestNonCRIRefused(t *testing.T) {
	e := startProxy(t, Options{Guard: refuseAll{}}, true)
	ctx := testCtx(t)
	for _, method := range []string{
		"/containerd.services.images.v1.Images/PullImage",
		"/runtime.v1alpha2.ImageService/PullImage",
		"runtime.v1.ImageService/PullImage", // no leading slash: the runtime's router accepts it
		"/runtime.v1.ImageService/PullImage",
	} {
		t.Run(method, func(t *testing.T) {
			before := e.fake.callCount()
			_, _, _, err := rawCall(ctx, e.proxy, method, nil)
			if err == nil {
				t.Fatal("call succeeded; it must be refused")
			}
			if c := status.Code(err); c != codes.Unimplemented && c != codes.PermissionDenied {
				t.Errorf("code %v (%v), want Unimplemented or the guard's PermissionDenied", c, err)
			}
			if n := e.fake.callCount() - before; n != 0 {
				t.Errorf("upstream saw %d calls", n)
			}
		})
	}
	// The same calls straight at the fake do reach it: the refusal is criguard's.
	if _, _, _, err := rawCall(ctx, e.direct, "/runtime.v1alpha2.ImageService/PullImage", nil); err != nil {
		t.Fatalf("direct v1alpha2 call: %v", err)
	}
}

type refuseAll struct{}

func (refuseAll) PullImage(context.Context, *runtimeapi.PullImageRequest, PullFunc) (*runtimeapi.PullImageResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "refused by test guard")
}

func (refuseAll) CreateContainer(context.Context, *runtimeapi.CreateContainerRequest, CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "refused by test guard")
}

func (refuseAll) RunPodSandbox(context.Context, *runtimeapi.RunPodSandboxRequest, RunPodFunc) (*runtimeapi.RunPodSandboxResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "refused by test guard")
}

// RunPodSandbox goes through the Guard (which learns each sandbox's namespace
// from it) when there is one, and straight upstream when there is none.
func TestRunPodSandboxThroughGuard(t *testing.T) {
	req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "prod", Uid: "u"}}}
	for _, tc := range []struct {
		name       string
		guard      Guard
		reachesUp  bool
		wantCode   codes.Code
		wantSubstr string
	}{
		{"refusing guard", refuseAll{}, false, codes.PermissionDenied, "refused by test guard"},
		{"passing guard", funcGuard{}, true, codes.OK, ""},
		{"no guard", nil, true, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, Options{Guard: tc.guard}, true)
			before := e.fake.callCount()
			resp, err := e.rt().RunPodSandbox(testCtx(t), req)
			if err == nil && resp.GetPodSandboxId() != "sb-p" {
				t.Errorf("sandbox ID %q, want the upstream's sb-p", resp.GetPodSandboxId())
			}
			if st := status.Convert(err); st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantSubstr) {
				t.Errorf("RunPodSandbox: %v, want %v %q", err, tc.wantCode, tc.wantSubstr)
			}
			if reached := e.fake.callCount() > before; reached != tc.reachesUp {
				t.Errorf("reached upstream: %v, want %v", reached, tc.reachesUp)
			}
		})
	}
}

// A Guard that panics refuses that one call; the proxy keeps serving.
func TestGuardPanicRefusesTheCall(t *testing.T) {
	g := funcGuard{
		pull: func(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
			if r.GetImage().GetImage() == "panic.example/x" {
				panic("hostile input")
			}
			return next(ctx, r)
		},
	}
	e := startProxy(t, Options{Guard: g}, true)
	ctx := testCtx(t)
	_, err := e.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "panic.example/x"}})
	if st := status.Convert(err); st.Code() != codes.Internal || !strings.HasPrefix(st.Message(), DeniedPrefix) {
		t.Fatalf("panicking guard: %v, want Internal with %q", err, DeniedPrefix)
	}
	if e.fake.PullCount() != 0 {
		t.Error("the refused pull reached the runtime")
	}
	if _, err := e.img().PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "reg.example/app:1"}}); err != nil {
		t.Fatalf("the next pull after a panic: %v", err)
	}
}

// funcGuard lets each test case decide.
type funcGuard struct {
	pull   func(context.Context, *runtimeapi.PullImageRequest, PullFunc) (*runtimeapi.PullImageResponse, error)
	create func(context.Context, *runtimeapi.CreateContainerRequest, CreateFunc) (*runtimeapi.CreateContainerResponse, error)
}

func (g funcGuard) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
	return g.pull(ctx, r, next)
}

// RunPodSandbox forwards: these tests judge pulls and creates only.
func (g funcGuard) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest, next RunPodFunc) (*runtimeapi.RunPodSandboxResponse, error) {
	return next(ctx, r)
}

func (g funcGuard) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest, next CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
	return g.create(ctx, r, next)
}

// The Guard sees PullImage and CreateContainer decoded and may rewrite or refuse
// them; its refusal reaches the caller as is and nothing reaches the runtime.
func TestGuard(t *testing.T) {
	const digestRef = "reg.example/app@sha256:0123456789012345678901234567890123456789012345678901234567890123"
	rewritePull := func(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
		if r.GetImage().GetImage() != "reg.example/app:1" || r.GetAuth().GetUsername() != "u" {
			return nil, status.Errorf(codes.Internal, "guard saw %v", r)
		}
		if md, _ := metadata.FromIncomingContext(ctx); mdValue(md, "x-test") != "kubelet" {
			return nil, status.Errorf(codes.Internal, "guard saw metadata %v", md)
		}
		r.Image.Image = digestRef
		return next(ctx, r)
	}
	rewriteCreate := func(ctx context.Context, r *runtimeapi.CreateContainerRequest, next CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
		if r.GetPodSandboxId() != "pod1" {
			return nil, status.Errorf(codes.Internal, "guard saw %v", r)
		}
		r.Config.Image.Image = digestRef
		return next(ctx, r)
	}
	deny := func(context.Context, *runtimeapi.PullImageRequest, PullFunc) (*runtimeapi.PullImageResponse, error) {
		return nil, status.Error(codes.PermissionDenied, "image reg.example/app:1 is not signed by a trusted key (policy prod, rule apps)")
	}
	denyCreate := func(context.Context, *runtimeapi.CreateContainerRequest, CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
		return nil, status.Error(codes.FailedPrecondition, "container image not verified")
	}
	nothing := func(context.Context, *runtimeapi.PullImageRequest, PullFunc) (*runtimeapi.PullImageResponse, error) {
		return nil, nil
	}
	passPull := func(ctx context.Context, r *runtimeapi.PullImageRequest, next PullFunc) (*runtimeapi.PullImageResponse, error) {
		return next(ctx, r)
	}
	passCreate := func(ctx context.Context, r *runtimeapi.CreateContainerRequest, next CreateFunc) (*runtimeapi.CreateContainerResponse, error) {
		return next(ctx, r)
	}
	tests := []struct {
		name        string
		guard       Guard
		image       string
		wantCode    codes.Code
		wantMsg     string
		wantUpImage string // image the runtime saw; "" = the call must not reach it
		wantTrailer string
	}{
		{"rewrite", funcGuard{rewritePull, rewriteCreate}, "reg.example/app:1", codes.OK, "", digestRef, "pulled"},
		{"refuse", funcGuard{deny, denyCreate}, "reg.example/app:1", codes.PermissionDenied, "not signed by a trusted key", "", ""},
		{"guard answers nothing", funcGuard{nothing, passCreate}, "reg.example/app:1", codes.Internal, "neither a response nor an error", "", ""},
		{"upstream error through next", funcGuard{passPull, passCreate}, "fail.example/x", codes.NotFound, "registry says no", "fail.example/x", "pulled"},
		{"no guard", nil, "reg.example/app:1", codes.OK, "", "reg.example/app:1", "pulled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, Options{Guard: tc.guard}, true)
			ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-test", "kubelet")
			var trl metadata.MD
			resp, err := e.img().PullImage(ctx, &runtimeapi.PullImageRequest{
				Image: &runtimeapi.ImageSpec{Image: tc.image},
				Auth:  &runtimeapi.AuthConfig{Username: "u", Password: "p"},
			}, grpc.Trailer(&trl))
			if status.Code(err) != tc.wantCode || (tc.wantMsg != "" && !strings.Contains(status.Convert(err).Message(), tc.wantMsg)) {
				t.Fatalf("PullImage: %v; want %v containing %q", err, tc.wantCode, tc.wantMsg)
			}
			up := e.fake.LastPull()
			switch {
			case tc.wantUpImage == "" && up != nil:
				t.Errorf("runtime saw a pull of %q", up.GetImage().GetImage())
			case tc.wantUpImage != "" && up.GetImage().GetImage() != tc.wantUpImage:
				t.Errorf("runtime pulled %q, want %q", up.GetImage().GetImage(), tc.wantUpImage)
			case tc.wantUpImage != "" && (up.GetAuth().GetPassword() != "p" || mdValue(e.fake.md(), "x-test") != "kubelet"):
				t.Errorf("runtime saw auth %v, metadata %v", up.GetAuth(), e.fake.md())
			}
			if mdValue(trl, "x-up-trailer") != tc.wantTrailer {
				t.Errorf("trailer %v, want x-up-trailer=%q", trl, tc.wantTrailer)
			}
			if err == nil && resp.GetImageRef() != "ref-of-"+tc.wantUpImage {
				t.Errorf("ImageRef = %q", resp.GetImageRef())
			}

			cresp, err := e.rt().CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
				PodSandboxId: "pod1",
				Config:       &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: tc.image}},
			})
			refused := tc.name == "refuse"
			if refused != (err != nil) {
				t.Fatalf("CreateContainer: %v", err)
			}
			if refused {
				if status.Code(err) != codes.FailedPrecondition || e.fake.LastCreate() != nil {
					t.Errorf("CreateContainer: %v, runtime saw %v", err, e.fake.LastCreate())
				}
				return
			}
			want := tc.image
			if tc.name == "rewrite" {
				want = digestRef
			}
			if got := e.fake.LastCreate().GetConfig().GetImage().GetImage(); got != want || cresp.GetContainerId() != "ctr-"+want {
				t.Errorf("runtime created from %q (id %q), want %q", got, cresp.GetContainerId(), want)
			}
		})
	}
}
