package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Upstream stream shapes. CRI v1 has unary and server-streaming methods only; a
// method unknown to the compiled cri-api might be anything, so it is forwarded as
// a bidirectional stream, which carries every shape.
var (
	unaryDesc        = grpc.StreamDesc{}
	serverStreamDesc = grpc.StreamDesc{ServerStreams: true}
	bidiDesc         = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
)

// outgoing returns ctx carrying the caller's request metadata for the upstream
// call. gRPC drops the reserved headers (content-type, user-agent, :authority,
// grpc-timeout...) itself; the deadline travels in ctx.
func outgoing(ctx, in context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(in)
	return metadata.NewOutgoingContext(ctx, md)
}

// sendErr reports a failed upstream send. io.EOF means the upstream already ended
// the call; its status is then read from RecvMsg, so it is not an error here.
func sendErr(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// copyTrailer hands the upstream trailer to the caller, if there is one.
func copyTrailer(ss grpc.ServerStream, cs grpc.ClientStream) {
	if t := cs.Trailer(); len(t) > 0 {
		ss.SetTrailer(t)
	}
}

// recvRequest reads the one request of a call. A caller that half-closes without
// sending one gets what gRPC's own unary handling gives it.
func recvRequest(ss grpc.ServerStream, m any) error {
	err := ss.RecvMsg(m)
	if errors.Is(err, io.EOF) {
		return status.Error(codes.Internal, io.ErrUnexpectedEOF.Error())
	}
	return err
}

// forwardUnary forwards one request and its one response as raw bytes. The
// response header is set, not sent, so it leaves with the response in one write,
// as it does from the upstream server itself.
func forwardUnary(ss grpc.ServerStream, up *grpc.ClientConn, method string, opts []grpc.CallOption) error {
	f := new(frame)
	defer f.release()
	if err := recvRequest(ss, f); err != nil {
		return err
	}
	ctx := ss.Context()
	cs, err := up.NewStream(outgoing(ctx, ctx), &unaryDesc, method, opts...)
	if err != nil {
		return err
	}
	if err := sendErr(cs.SendMsg(f)); err != nil {
		return err
	}
	err = cs.RecvMsg(f)
	if hdr, _ := cs.Header(); hdr != nil {
		if herr := ss.SetHeader(hdr); herr != nil && err == nil {
			err = herr
		}
	}
	copyTrailer(ss, cs)
	if err != nil {
		return err
	}
	return ss.SendMsg(f)
}

// forwardServerStream forwards one request and every response until the upstream
// ends the stream. ctx (the caller's, or one the server cancels at shutdown)
// governs the upstream call. The upstream's header is relayed as soon as it
// arrives, because a watcher may wait for it before any message comes.
func forwardServerStream(ctx context.Context, ss grpc.ServerStream, up *grpc.ClientConn, method string, opts []grpc.CallOption) error {
	f := new(frame)
	defer f.release()
	if err := recvRequest(ss, f); err != nil {
		return err
	}
	cs, err := up.NewStream(outgoing(ctx, ss.Context()), &serverStreamDesc, method, opts...)
	if err != nil {
		return err
	}
	if err := sendErr(cs.SendMsg(f)); err != nil {
		return err
	}
	return relayResponses(ss, cs, f)
}

// relayResponses copies the upstream header, every response and the trailer to
// the caller and returns the upstream's final status.
func relayResponses(ss grpc.ServerStream, cs grpc.ClientStream, f *frame) error {
	// Header returns nil for a trailers-only answer (an immediate error): then no
	// header is sent, and the caller too gets a trailers-only answer.
	if hdr, _ := cs.Header(); hdr != nil {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	for {
		err := cs.RecvMsg(f)
		if err != nil {
			copyTrailer(ss, cs)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}

// forwardBidi forwards a call of unknown shape: requests flow upstream on their
// own goroutine while responses flow back on this one. Returning ends the call,
// which also ends a request copy still waiting on the caller.
func forwardBidi(ss grpc.ServerStream, up *grpc.ClientConn, method string, opts []grpc.CallOption) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	cs, err := up.NewStream(outgoing(ctx, ss.Context()), &bidiDesc, method, opts...)
	if err != nil {
		return err
	}
	reqErr := make(chan error, 1)
	go func() {
		reqErr <- copyRequests(ss, cs)
	}()
	f := new(frame)
	defer f.release()
	respErr := relayResponses(ss, cs, f)
	if respErr != nil {
		return respErr
	}
	// The upstream ended with OK. A request copy that failed because the caller
	// broke the call (not a clean half-close) must not be reported as success.
	select {
	case err := <-reqErr:
		return err
	default:
		return nil
	}
}

// copyRequests copies the caller's requests upstream until the caller half-closes.
func copyRequests(ss grpc.ServerStream, cs grpc.ClientStream) error {
	f := new(frame)
	defer f.release()
	for {
		if err := ss.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return sendErr(cs.CloseSend())
			}
			return err
		}
		if err := cs.SendMsg(f); err != nil {
			// The upstream ended the call; relayResponses reports how.
			return nil
		}
	}
}

// judge decodes the one request of an intercepted method and lets decide (the
// Guard) answer it (subject names what the request is about, for a refusal), with next forwarding a typed request upstream. Upstream
// header and trailer reach the caller whether the call succeeds or not.
//
// A request carrying a field unknown to the compiled cri-api is refused before
// the Guard sees it (see UnknownField), with deniedCode and the message prefix
// kubelet shows as the pod's reason.
func judge[Req, Resp proto.Message](
	ss grpc.ServerStream, up *grpc.ClientConn, method string, req Req, newResp func() Resp,
	deniedCode codes.Code, subject func(Req) string, log *slog.Logger, refused func(reason string),
	decide func(context.Context, Req, func(context.Context, Req) (Resp, error)) (Resp, error),
) error {
	if err := recvRequest(ss, req); err != nil {
		return err
	}
	in := ss.Context()
	if field := UnknownField(req); field != "" {
		what := subject(req)
		log.WarnContext(in, "CRI request refused: it carries a field unknown to criguard's cri-api",
			"method", method, "subject", what, "field", field)
		refused(RefusedUnknownField)
		return status.Errorf(deniedCode, "%s%s denied: the %s request carries field %s, unknown to the CRI API criguard was built with; "+
			"criguard cannot judge what it cannot read: run a criguard built with a cri-api at least as new as the kubelet's",
			DeniedPrefix, what, method, field)
	}
	var hdr, trl metadata.MD
	next := func(ctx context.Context, r Req) (Resp, error) {
		resp := newResp()
		if !r.ProtoReflect().IsValid() {
			var zero Resp
			return zero, status.Errorf(codes.Internal, "criguard: guard forwarded a nil %s request", method)
		}
		err := up.Invoke(outgoing(ctx, in), method, r, resp, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			var zero Resp
			return zero, err
		}
		return resp, nil
	}
	resp, err := decide(in, req, next)
	if len(hdr) > 0 {
		_ = ss.SetHeader(hdr) // fails only once a header went out, which cannot happen before SendMsg
	}
	if len(trl) > 0 {
		ss.SetTrailer(trl)
	}
	if err != nil {
		return err
	}
	if !resp.ProtoReflect().IsValid() {
		// Fail closed: a guard bug must not look like success to kubelet.
		return status.Errorf(codes.Internal, "criguard: guard returned neither a response nor an error for %s", method)
	}
	return ss.SendMsg(resp)
}
