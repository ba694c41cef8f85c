// Package forward is the forwarding half of criguard's CRI proxy: kubelet talks
// to it as if it were containerd, and every call is forwarded to the upstream
// runtime. It knows nothing of policy: enforcement plugs in through Guard.
//
// Forwarding copies raw message bytes (a gRPC unknown-service handler with a
// raw codec), so every CRI v1 method passes unchanged, including server streams
// (GetContainerEvents, Stream*) and, without a Guard, methods added to cri-api
// after the version criguard was built with. Metadata, header, trailer, status
// (code, message, details), deadlines and cancellation pass both ways. Only
// /runtime.v1.ImageService/PullImage and /runtime.v1.RuntimeService/CreateContainer
// are decoded and handed to a Guard. Calls outside runtime.v1 (containerd's own
// API, the retired v1alpha2 CRI) are refused: forwarding them would let a client
// pull or run images around the Guard. With a Guard, runtime.v1 methods unknown
// to the compiled cri-api are refused (Unimplemented) for the same reason, and
// judged requests carrying fields unknown to it are denied (UnknownField).
//
// API:
//   - Dial(ctx, target, ...grpc.DialOption) connects to the upstream runtime
//     (unix:///path or a bare path): never blocks, reconnects by itself, fails
//     fast with Unavailable, MaxMsgSize each way, usable by typed clients too.
//   - Probe(ctx, conn) asks it for its CRI v1 Version (Unimplemented = not a CRI
//     runtime); LogUpstreamState logs when it goes away and comes back;
//     SocketPath parses an endpoint.
//   - NewServer(Options{Upstream, Guard, Logger, DrainTimeout}) builds the proxy;
//     ListenUnix(ctx, path) creates its 0660 socket (stale one replaced, live one
//     refused); Server.Serve(ctx, lis) serves until ctx ends, then drains.
//   - NewBareForwarder(conn) is the benchmark floor: criguard's own unary
//     raw-bytes path with nothing else (no method table, allowlist, guard, log).
package forward

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultDrainTimeout bounds how long Serve waits for in-flight calls at shutdown.
const DefaultDrainTimeout = 10 * time.Second

// Options configure a Server.
type Options struct {
	// Upstream is the runtime connection, from Dial. Required.
	Upstream *grpc.ClientConn
	// Guard judges PullImage and CreateContainer; nil forwards them unchanged.
	Guard Guard
	// Logger receives operational logs; nil discards them. Per-call lines are
	// logged at debug level only.
	Logger *slog.Logger
	// DrainTimeout bounds the wait for in-flight calls at shutdown, after which
	// they are cut. Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Metrics count calls refused before any decision; nil counts nothing.
	Metrics *Metrics
}

// kind says how a method is forwarded.
type kind uint8

const (
	kindGeneric      kind = iota // in runtime.v1 but unknown to the compiled cri-api
	kindUnary                    // request, response
	kindServerStream             // request, responses until the upstream ends
	kindWatch                    // server stream that never ends by itself; cut at shutdown
	kindPull                     // PullImage, judged by the Guard
	kindCreate                   // CreateContainer, judged by the Guard
	kindSandbox                  // RunPodSandbox, seen by the Guard (which namespace a sandbox is in)
)

const (
	criPrefix    = "/runtime.v1."
	methodPull   = runtimeapi.ImageService_PullImage_FullMethodName
	methodCreate = runtimeapi.RuntimeService_CreateContainer_FullMethodName
	methodRunPod = runtimeapi.RuntimeService_RunPodSandbox_FullMethodName
	methodEvents = runtimeapi.RuntimeService_GetContainerEvents_FullMethodName
)

// Server is the CRI proxy. Serve it once.
type Server struct {
	up       *grpc.ClientConn
	guard    Guard
	log      *slog.Logger
	drain    time.Duration
	methods  map[string]kind
	callOpts []grpc.CallOption
	srv      *grpc.Server
	refused  func(reason string)
	// shutdown ends when draining starts; watches (GetContainerEvents) end with
	// it, since they would otherwise hold the drain open until its timeout.
	shutdown     context.Context
	stopWatching context.CancelFunc
}

// NewServer returns a proxy forwarding to opts.Upstream.
func NewServer(opts Options) (*Server, error) {
	if opts.Upstream == nil {
		return nil, errors.New("criproxy: Options.Upstream is required")
	}
	s := &Server{
		up:      opts.Upstream,
		guard:   opts.Guard,
		log:     opts.Logger,
		drain:   opts.DrainTimeout,
		methods: criMethods(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.drain <= 0 {
		s.drain = DefaultDrainTimeout
	}
	s.refused = opts.Metrics.refused
	if s.guard == nil {
		// Without a guard the two judged methods are plain unary calls.
		s.methods[methodPull] = kindUnary
		s.methods[methodCreate] = kindUnary
		s.methods[methodRunPod] = kindUnary
	}
	codec := newRawCodec()
	s.callOpts = []grpc.CallOption{grpc.ForceCodecV2(codec)}
	s.srv = grpc.NewServer(serverOptions(codec, s.handle)...)
	s.shutdown, s.stopWatching = context.WithCancel(context.Background())
	return s, nil
}

func serverOptions(codec rawCodec, h grpc.StreamHandler) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnknownServiceHandler(h),
		grpc.ForceServerCodecV2(codec),
		grpc.MaxRecvMsgSize(MaxMsgSize),
		grpc.MaxSendMsgSize(MaxMsgSize),
	}
}

// criMethods maps every method of the compiled cri-api to how it is forwarded.
func criMethods() map[string]kind {
	m := make(map[string]kind)
	for _, sd := range []*grpc.ServiceDesc{&runtimeapi.RuntimeService_ServiceDesc, &runtimeapi.ImageService_ServiceDesc} {
		for _, md := range sd.Methods {
			m["/"+sd.ServiceName+"/"+md.MethodName] = kindUnary
		}
		for _, st := range sd.Streams {
			k := kindServerStream
			if st.ClientStreams {
				k = kindGeneric
			}
			m["/"+sd.ServiceName+"/"+st.StreamName] = k
		}
	}
	m[methodEvents] = kindWatch
	m[methodPull] = kindPull
	m[methodCreate] = kindCreate
	m[methodRunPod] = kindSandbox
	return m
}

// handle serves every call; no service is registered, so all arrive here.
func (s *Server) handle(_ any, ss grpc.ServerStream) (err error) {
	method, _ := grpc.MethodFromServerStream(ss)
	// grpc-go does not recover handler panics: one would end the process and
	// with it the node's runtime endpoint. A panic (a library choking on
	// hostile input, say) refuses this call and nothing else.
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ss.Context(), "criguard: panic while handling a CRI call; refused", "method", method, "panic", fmt.Sprint(r))
			err = status.Errorf(codes.Internal, "%scriguard failed internally while handling %s and refused it (a bug: please report it with criguard's log)", DeniedPrefix, method)
		}
	}()
	k, known := s.methods[method]
	if !known {
		// The exact prefix, leading slash included, is what keeps a PullImage
		// spelled another way from reaching the upstream unjudged.
		if !strings.HasPrefix(method, criPrefix) {
			s.refused(RefusedNotCRIv1)
			return status.Errorf(codes.Unimplemented, "criguard forwards only CRI v1 (runtime.v1.*); %q is not forwarded", method)
		}
		if s.guard != nil {
			// A method newer than the compiled cri-api could pull or run an
			// image (a streaming pull, say) around the Guard. kubelet treats
			// Unimplemented as an older runtime and falls back.
			s.log.DebugContext(ss.Context(), "cri call refused: method unknown to criguard's cri-api", "method", method)
			s.refused(RefusedUnknownMethod)
			return status.Errorf(codes.Unimplemented, "criguard enforces an image policy and forwards only the CRI methods of the cri-api it was built with; "+
				"%q is not among them: run a criguard built with a cri-api at least as new as the kubelet's", method)
		}
		k = kindGeneric
	}
	var start time.Time
	debug := s.log.Enabled(ss.Context(), slog.LevelDebug)
	if debug {
		start = time.Now()
	}
	switch k {
	case kindUnary:
		err = forwardUnary(ss, s.up, method, s.callOpts)
	case kindServerStream:
		err = forwardServerStream(ss.Context(), ss, s.up, method, s.callOpts)
	case kindWatch:
		err = s.forwardWatch(ss, method)
	case kindPull:
		err = judge(ss, s.up, method, new(runtimeapi.PullImageRequest), newPullResponse,
			codes.Unknown, func(r *runtimeapi.PullImageRequest) string { return fmt.Sprintf("image %q", r.GetImage().GetImage()) }, s.log, s.refused,
			func(ctx context.Context, r *runtimeapi.PullImageRequest, next func(context.Context, *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error)) (*runtimeapi.PullImageResponse, error) {
				return s.guard.PullImage(ctx, r, next)
			})
	case kindCreate:
		err = judge(ss, s.up, method, new(runtimeapi.CreateContainerRequest), newCreateResponse,
			codes.PermissionDenied, func(r *runtimeapi.CreateContainerRequest) string {
				return fmt.Sprintf("image %q", r.GetConfig().GetImage().GetImage())
			}, s.log, s.refused,
			func(ctx context.Context, r *runtimeapi.CreateContainerRequest, next func(context.Context, *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error)) (*runtimeapi.CreateContainerResponse, error) {
				return s.guard.CreateContainer(ctx, r, next)
			})
	case kindSandbox:
		err = judge(ss, s.up, method, new(runtimeapi.RunPodSandboxRequest), newRunPodResponse,
			codes.PermissionDenied, func(r *runtimeapi.RunPodSandboxRequest) string {
				m := r.GetConfig().GetMetadata()
				return fmt.Sprintf("pod sandbox %s/%s", m.GetNamespace(), m.GetName())
			}, s.log, s.refused,
			func(ctx context.Context, r *runtimeapi.RunPodSandboxRequest, next func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error)) (*runtimeapi.RunPodSandboxResponse, error) {
				return s.guard.RunPodSandbox(ctx, r, next)
			})
	default:
		err = forwardBidi(ss, s.up, method, s.callOpts)
	}
	if debug {
		s.log.Debug("cri call", "method", method, "code", status.Code(err).String(), "duration", time.Since(start))
	}
	return err
}

func newPullResponse() *runtimeapi.PullImageResponse { return new(runtimeapi.PullImageResponse) }

func newCreateResponse() *runtimeapi.CreateContainerResponse {
	return new(runtimeapi.CreateContainerResponse)
}

func newRunPodResponse() *runtimeapi.RunPodSandboxResponse {
	return new(runtimeapi.RunPodSandboxResponse)
}

// forwardWatch forwards a watch and ends it when the server starts draining,
// telling the caller to reconnect (to the next criguard) rather than that the
// runtime failed.
func (s *Server) forwardWatch(ss grpc.ServerStream, method string) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stop := context.AfterFunc(s.shutdown, cancel)
	defer stop()
	err := forwardServerStream(ctx, ss, s.up, method, s.callOpts)
	if err != nil && s.shutdown.Err() != nil && ss.Context().Err() == nil {
		return status.Error(codes.Unavailable, "criguard is shutting down; reconnect")
	}
	return err
}

// Serve serves CRI on lis until ctx ends, then stops accepting calls, ends
// watches and drains in-flight calls for at most the drain timeout before
// cutting them. It returns nil after a shutdown asked for by ctx, or the error
// that stopped serving. A Server serves once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(lis) }()
	select {
	case err := <-errc:
		s.stopWatching()
		s.srv.Stop()
		return fmt.Errorf("serving CRI on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: draining in-flight CRI calls", "drain_timeout", s.drain)
	s.stopWatching()
	drained := make(chan struct{})
	go func() {
		s.srv.GracefulStop()
		close(drained)
	}()
	timer := time.NewTimer(s.drain)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		s.log.Warn("drain timeout reached; cutting the calls still in flight", "drain_timeout", s.drain)
		s.srv.Stop()
		<-drained
	}
	return <-errc
}

// NewBareForwarder returns a gRPC server that forwards every call to upstream as
// one raw request and one raw response, with metadata, header, trailer and
// status, and does nothing else: no method table, no CRI allowlist, no guard, no
// logging, no streams. It is the floor any proxy hop costs, for benchmarks
// against criguard (whose unary path is the same code). Serve it with its Serve
// method; it is not a product.
func NewBareForwarder(upstream *grpc.ClientConn) *grpc.Server {
	codec := newRawCodec()
	opts := []grpc.CallOption{grpc.ForceCodecV2(codec)}
	return grpc.NewServer(serverOptions(codec, func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		return forwardUnary(ss, upstream, method, opts)
	})...)
}

// ListenUnix creates the unix socket at path for Serve, mode 0660 (kubelet runs
// as root; no one else may talk to the runtime through criguard). A missing
// parent directory is created 0750. A stale socket file (nothing answers on it)
// is replaced; a socket some live process answers on is left alone and refused,
// since taking it over would silently cut kubelet off from that process (say, a
// second criguard). Anything that is not a socket is never removed.
func ListenUnix(ctx context.Context, path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("listen socket %s: cannot create its directory %s: %w", path, dir, err)
	}
	if err := removeStale(ctx, path); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("listen socket %s: directory %s is not writable by uid %d: %w", path, dir, os.Geteuid(), err)
		}
		return nil, fmt.Errorf("listen socket %s: %w", path, err)
	}
	// The socket is born with the umask's mode; the 0750 directory keeps others
	// out until this chmod narrows it.
	if err := os.Chmod(path, 0o660); err != nil {
		lis.Close()
		return nil, fmt.Errorf("listen socket %s: set mode 0660: %w", path, err)
	}
	return lis, nil
}

// removeStale removes a socket file at path that no process answers on.
func removeStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("listen socket %s: directory %s is not accessible by uid %d: %w", path, filepath.Dir(path), os.Geteuid(), err)
	}
	if err != nil {
		return fmt.Errorf("listen socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		what := "file"
		if fi.IsDir() {
			what = "directory"
		}
		return fmt.Errorf("listen socket %s: a %s that is not a socket is in the way; remove it or choose another listen path", path, what)
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen socket %s: another process is serving on it (a running criguard?); stop it or choose another listen path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("listen socket %s exists and could not be checked for a live server: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen socket %s: remove stale socket: %w", path, err)
	}
	return nil
}
