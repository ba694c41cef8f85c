package forward

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/criguard/criguard/internal/crirecord"
)

// fakeRuntime is an in-process upstream: parts of CRI v1, plus services and
// methods the compiled cri-api does not know, on a real unix socket.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	crirecord.Calls // PullImage and CreateContainer requests

	mu         sync.Mutex
	lastMD     metadata.MD
	deadline   time.Time
	hasDL      bool
	calls      int        // every call that reached the fake
	blockedErr chan error // ctx error seen by a blocking ContainerStatus
	release    chan struct{}
	started    chan string // method names of slow calls as they start
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		blockedErr: make(chan error, 8),
		release:    make(chan struct{}),
		started:    make(chan string, 8),
	}
}

func (f *fakeRuntime) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	dl, ok := ctx.Deadline()
	f.mu.Lock()
	f.lastMD = md
	f.deadline, f.hasDL = dl, ok
	f.calls++
	f.mu.Unlock()
}

func (f *fakeRuntime) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeRuntime) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	f.record(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-up-header", "h1"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-up-trailer", "t1"))
	return &runtimeapi.VersionResponse{Version: req.GetVersion(), RuntimeName: "fake", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"}, nil
}

// ListContainers echoes the label selector's "echo" value in a container label,
// so a big request makes a big response.
func (f *fakeRuntime) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.record(ctx)
	echo := req.GetFilter().GetLabelSelector()["echo"]
	return &runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{{Id: "c1", Labels: map[string]string{"echo": echo}}}}, nil
}

// PodSandboxStatus fails with a status carrying details, header and trailer.
func (f *fakeRuntime) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.record(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-up-header", "err-h"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-up-trailer", "err-t"))
	st, err := status.New(codes.NotFound, "sandbox "+req.GetPodSandboxId()+" not found").
		WithDetails(&runtimeapi.ContainerFilter{Id: "detail-" + req.GetPodSandboxId()})
	if err != nil {
		return nil, err
	}
	return nil, st.Err()
}

// ContainerStatus blocks until the caller's context ends and reports how it ended.
func (f *fakeRuntime) ContainerStatus(ctx context.Context, _ *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	f.record(ctx)
	f.started <- "ContainerStatus"
	<-ctx.Done()
	f.blockedErr <- ctx.Err()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// ExecSync is a slow call: it answers once release is closed.
func (f *fakeRuntime) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	f.record(ctx)
	f.started <- "ExecSync"
	select {
	case <-f.release:
		return &runtimeapi.ExecSyncResponse{Stdout: []byte("done " + req.GetContainerId())}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// StreamContainers sends three messages, then ends with a trailer.
func (f *fakeRuntime) StreamContainers(req *runtimeapi.StreamContainersRequest, ss grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	f.record(ss.Context())
	ss.SetTrailer(metadata.Pairs("x-up-trailer", "stream-t"))
	for i := range 3 {
		id := req.GetFilter().GetId() + "-" + string(rune('a'+i))
		if err := ss.Send(&runtimeapi.StreamContainersResponse{Containers: []*runtimeapi.Container{{Id: id}}}); err != nil {
			return err
		}
	}
	return nil
}

// GetContainerEvents is a watch: it sends its header at once, two events, then
// waits for the caller to leave and reports how the call ended.
func (f *fakeRuntime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, ss grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	f.record(ss.Context())
	if err := ss.SendHeader(metadata.Pairs("x-up-header", "events")); err != nil {
		return err
	}
	f.started <- "GetContainerEvents"
	for _, id := range []string{"e1", "e2"} {
		if err := ss.Send(&runtimeapi.ContainerEventResponse{ContainerId: id}); err != nil {
			return err
		}
	}
	<-ss.Context().Done()
	f.blockedErr <- ss.Context().Err()
	return ss.Context().Err()
}

func (f *fakeRuntime) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	f.record(ctx)
	f.AddPull(req)
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-up-trailer", "pulled"))
	if req.GetImage().GetImage() == "fail.example/x" {
		return nil, status.Error(codes.NotFound, "registry says no")
	}
	return &runtimeapi.PullImageResponse{ImageRef: "ref-of-" + req.GetImage().GetImage()}, nil
}

func (f *fakeRuntime) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	f.record(ctx)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb-" + req.GetConfig().GetMetadata().GetName()}, nil
}

func (f *fakeRuntime) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	f.record(ctx)
	f.AddCreate(req)
	return &runtimeapi.CreateContainerResponse{ContainerId: "ctr-" + req.GetConfig().GetImage().GetImage()}, nil
}

func (f *fakeRuntime) md() metadata.MD {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastMD
}

// futureServiceDesc stands for a CRI service added after our cri-api: a unary
// echo of raw bytes (valid protobuf or not) and a bidirectional chat.
func futureServiceDesc(f *fakeRuntime) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "runtime.v1.FutureService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{
			{StreamName: "Echo", ServerStreams: true, ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
				return f.rawEcho(ss)
			}},
			{StreamName: "Chat", ServerStreams: true, ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
				f.record(ss.Context())
				for {
					var in frame
					if err := ss.RecvMsg(&in); err != nil {
						if errors.Is(err, io.EOF) {
							ss.SetTrailer(metadata.Pairs("x-up-trailer", "chat-done"))
							return nil
						}
						return err
					}
					reply := append([]byte("re:"), in.buf.ReadOnlyData()...)
					in.release()
					if err := ss.SendMsg(&frame{buf: sliceBuf(reply)}); err != nil {
						return err
					}
				}
			}},
		},
	}
}

// otherServiceDesc stands for non-CRI APIs on the runtime's socket (containerd's
// own services, the retired v1alpha2 CRI): criguard must never forward them.
func otherServiceDescs(f *fakeRuntime) []*grpc.ServiceDesc {
	var out []*grpc.ServiceDesc
	for _, name := range []string{"containerd.services.images.v1.Images", "runtime.v1alpha2.ImageService"} {
		out = append(out, &grpc.ServiceDesc{
			ServiceName: name,
			HandlerType: (*any)(nil),
			Streams: []grpc.StreamDesc{{StreamName: "PullImage", ServerStreams: true, ClientStreams: true,
				Handler: func(_ any, ss grpc.ServerStream) error {
					f.AddPull(&runtimeapi.PullImageRequest{})
					return f.rawEcho(ss)
				}}},
		})
	}
	return out
}

// rawEcho answers one raw request with the same bytes.
func (f *fakeRuntime) rawEcho(ss grpc.ServerStream) error {
	f.record(ss.Context())
	var in frame
	if err := ss.RecvMsg(&in); err != nil {
		return err
	}
	ss.SetTrailer(metadata.Pairs("x-up-trailer", "echo"))
	return ss.SendMsg(&in)
}

// unknownMethod handles methods of known services that the compiled cri-api
// lacks, e.g. /runtime.v1.RuntimeService/FutureMethod: it echoes a BytesValue.
func (f *fakeRuntime) unknownMethod(_ any, ss grpc.ServerStream) error {
	f.record(ss.Context())
	m, _ := grpc.MethodFromServerStream(ss)
	if m != "/runtime.v1.RuntimeService/FutureMethod" {
		return status.Errorf(codes.Unimplemented, "fake: unknown method %s", m)
	}
	in := new(wrapperspb.BytesValue)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	return ss.SendMsg(wrapperspb.Bytes(append([]byte("future:"), in.GetValue()...)))
}

// shortTempDir returns a temp dir with a short path: unix socket paths are
// limited to 108 bytes, which t.TempDir's long names can exceed.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cgp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// serveFake serves f on a unix socket at path until the returned stop is called
// (also at cleanup).
func serveFake(t testing.TB, f *fakeRuntime, path string) (stop func()) {
	t.Helper()
	srv := grpc.NewServer(
		grpc.ForceServerCodecV2(newRawCodec()), // frames for the raw handlers, proto otherwise
		grpc.UnknownServiceHandler(f.unknownMethod),
		grpc.MaxRecvMsgSize(MaxMsgSize), grpc.MaxSendMsgSize(MaxMsgSize),
	)
	runtimeapi.RegisterRuntimeServiceServer(srv, f)
	runtimeapi.RegisterImageServiceServer(srv, f)
	srv.RegisterService(futureServiceDesc(f), f)
	for _, d := range otherServiceDescs(f) {
		srv.RegisterService(d, f)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// proxyEnv is a fake runtime behind a criguard proxy, with clients for both.
type proxyEnv struct {
	dir       string
	fake      *fakeRuntime
	stopFake  func()
	upSock    string
	proxySock string
	upConn    *grpc.ClientConn // Dial'ed upstream, as serve does
	server    *Server
	cancel    context.CancelFunc
	served    chan struct{} // closed when Serve returned, with serveErr
	serveErr  error
	proxy     *grpc.ClientConn // a kubelet-like client of the proxy
	direct    *grpc.ClientConn // the same client straight at the fake
}

func (e *proxyEnv) rt() runtimeapi.RuntimeServiceClient {
	return runtimeapi.NewRuntimeServiceClient(e.proxy)
}
func (e *proxyEnv) img() runtimeapi.ImageServiceClient {
	return runtimeapi.NewImageServiceClient(e.proxy)
}

// stopProxy ends Serve (as SIGTERM does) and returns its result.
func (e *proxyEnv) stopProxy(t testing.TB) error {
	t.Helper()
	e.cancel()
	select {
	case <-e.served:
		return e.serveErr
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return 30s after its context ended")
		return nil
	}
}

func clientConn(t testing.TB, sock string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startProxy starts a fake runtime (unless startFake is false) and a proxy in
// front of its socket.
func startProxy(t testing.TB, opts Options, startFake bool) *proxyEnv {
	t.Helper()
	e := &proxyEnv{dir: shortTempDir(t), fake: newFakeRuntime()}
	e.upSock = filepath.Join(e.dir, "up.sock")
	e.proxySock = filepath.Join(e.dir, "run", "proxy.sock")
	e.stopFake = func() {}
	if startFake {
		e.stopFake = serveFake(t, e.fake, e.upSock)
	}
	conn, err := Dial(context.Background(), e.upSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.upConn = conn
	opts.Upstream = conn
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 20 * time.Second
	}
	if e.server, err = NewServer(opts); err != nil {
		t.Fatal(err)
	}
	lis, err := ListenUnix(context.Background(), e.proxySock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.served = make(chan struct{})
	go func() {
		e.serveErr = e.server.Serve(ctx, lis)
		close(e.served)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.served:
		case <-time.After(30 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	e.proxy = clientConn(t, e.proxySock)
	e.direct = clientConn(t, e.upSock)
	return e
}

// sliceBuf wraps b as a gRPC buffer (no pool; freeing is a no-op).
func sliceBuf(b []byte) mem.Buffer { return mem.SliceBuffer(b) }

// rawCall makes a unary call with raw request bytes and returns the raw
// response bytes, header and trailer.
func rawCall(ctx context.Context, conn *grpc.ClientConn, method string, req []byte) ([]byte, metadata.MD, metadata.MD, error) {
	var hdr, trl metadata.MD
	out := new(frame)
	defer out.release()
	err := conn.Invoke(ctx, method, &frame{buf: sliceBuf(req)}, out,
		grpc.ForceCodecV2(newRawCodec()), grpc.Header(&hdr), grpc.Trailer(&trl))
	if err != nil {
		return nil, hdr, trl, err
	}
	return append([]byte(nil), out.buf.ReadOnlyData()...), hdr, trl, nil
}

func mdValue(md metadata.MD, k string) string {
	return strings.Join(md.Get(k), ",")
}
