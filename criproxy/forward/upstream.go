package forward

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// MaxMsgSize bounds every message in either direction, on both sides of the proxy.
// It is kubelet's own CRI limit, so nothing kubelet can send or receive directly is
// refused by the proxy.
const MaxMsgSize = 16 << 20

// SocketPath returns the filesystem path of a unix socket endpoint written as
// unix:///abs/path, unix:path or a bare path. Relative paths are made absolute.
// Other schemes are refused: criguard only speaks to node-local sockets.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	switch {
	case strings.HasPrefix(p, "unix://"):
		p = strings.TrimPrefix(p, "unix://")
	case strings.HasPrefix(p, "unix:"):
		p = strings.TrimPrefix(p, "unix:")
	case strings.Contains(p, "://"):
		return "", fmt.Errorf("endpoint %q: only unix sockets are supported (unix:///path or a bare path)", endpoint)
	}
	if p == "" {
		return "", fmt.Errorf("endpoint %q: empty socket path", endpoint)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	return abs, nil
}

// Dial returns a client connection to the CRI runtime at target (unix:///path or a
// bare path). It does not wait for the runtime: gRPC connects on first use and
// reconnects by itself whenever the runtime restarts, retrying at most every
// second (gRPC's default backoff grows to two minutes, far too slow to notice a
// restarted containerd on a local socket). Calls fail fast: while the runtime is
// unreachable they return Unavailable at once instead of waiting.
//
// The connection carries no codec of its own, so typed clients
// (runtimeapi.NewImageServiceClient, containerd.NewWithConn) can share it with the
// proxy, which picks its raw-bytes codec per call. Messages up to MaxMsgSize pass
// each way. extra options are appended to criguard's. ctx is only checked:
// Dial never blocks (use Probe to wait for an answer).
func Dial(ctx context.Context, target string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path, err := SocketPath(target)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithUserAgent("criguard"),
	}
	conn, err := grpc.NewClient("unix://"+path, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", path, err)
	}
	return conn, nil
}

// Probe asks the runtime behind conn for its CRI v1 version. It fails fast when
// the runtime is unreachable; ctx bounds a runtime that accepts but never answers.
// A runtime that answers without CRI v1 (Unimplemented) yields an error whose
// status code is kept, so callers can tell a wrong socket from a down one.
func Probe(ctx context.Context, conn *grpc.ClientConn) (*runtimeapi.VersionResponse, error) {
	v, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return nil, fmt.Errorf("upstream %s answers but does not serve CRI v1 (is containerd's CRI plugin enabled?): %w", conn.Target(), err)
		}
		return nil, fmt.Errorf("upstream %s does not answer CRI Version: %w", conn.Target(), err)
	}
	return v, nil
}

// LogUpstreamState logs the upstream connection's state changes until ctx ends:
// one line when the runtime becomes unreachable and one when it is back, instead
// of one per failed call. gRPC only connects when calls are made, so an idle
// proxy logs nothing.
func LogUpstreamState(ctx context.Context, conn *grpc.ClientConn, logger *slog.Logger) {
	state := conn.GetState()
	down := false
	for conn.WaitForStateChange(ctx, state) {
		state = conn.GetState()
		switch state {
		case connectivity.TransientFailure:
			if !down {
				logger.Warn("upstream unreachable; CRI calls fail with Unavailable until it is back",
					"upstream", conn.Target())
			}
			down = true
		case connectivity.Ready:
			if down {
				logger.Info("upstream reachable again", "upstream", conn.Target())
			} else {
				logger.Debug("upstream connected", "upstream", conn.Target())
			}
			down = false
		}
	}
}
