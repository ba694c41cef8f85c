// Command bareforwarder is the benchmark floor for a CRI proxy hop: a gRPC
// server whose unknown-service handler forwards each unary call to an upstream
// socket as one raw request and one raw response (metadata, header, trailer and
// status included) and does nothing else. The harness starts it as its own
// process, as criguard runs, so both hops pay the same scheduling costs.
//
//	bareforwarder -listen /path/fwd.sock -upstream /path/containerd.sock [-impl plain|criproxy]
//
// -impl plain (default) is this file's handler with a []byte codec;
// -impl criproxy is forward.NewBareForwarder (criguard's own unary path
// without its method table, guard or logging).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"

	"github.com/criguard/criguard/criproxy/forward"
)

const maxMsg = 16 << 20

// rawCodec moves *[]byte untouched; named "proto" so the upstream sees the
// content-subtype it expects.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

func main() {
	listen := flag.String("listen", "", "unix socket path to serve on")
	upstream := flag.String("upstream", "", "unix socket path to forward to")
	impl := flag.String("impl", "plain", "plain or criproxy")
	flag.Parse()
	if err := run(*listen, *upstream, *impl); err != nil {
		fmt.Fprintln(os.Stderr, "bareforwarder:", err)
		os.Exit(1)
	}
}

func run(listen, upstream, impl string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	conn, err := grpc.NewClient("unix://"+upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	var srv *grpc.Server
	switch impl {
	case "plain":
		srv = plain(conn)
	case "criproxy":
		srv = forward.NewBareForwarder(conn)
	default:
		return fmt.Errorf("-impl %q: want plain or criproxy", impl)
	}
	_ = os.Remove(listen)
	lis, err := net.Listen("unix", listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); srv.Stop() }()
	return srv.Serve(lis)
}

// plain forwards unary calls: receive one raw message, invoke upstream with
// the incoming metadata, relay header, response, trailer and status.
func plain(up *grpc.ClientConn) *grpc.Server {
	codec := rawCodec{}
	h := func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		var req []byte
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		ctx := ss.Context()
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		var resp []byte
		var header, trailer metadata.MD
		err := up.Invoke(ctx, method, &req, &resp, grpc.ForceCodec(codec), grpc.Header(&header), grpc.Trailer(&trailer))
		if len(header) > 0 {
			_ = ss.SetHeader(header)
		}
		ss.SetTrailer(trailer)
		if err != nil {
			return err
		}
		return ss.SendMsg(&resp)
	}
	return grpc.NewServer(grpc.UnknownServiceHandler(h), grpc.ForceServerCodec(codec),
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg))
}
