package forward

import (
	"errors"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// frame is one gRPC message kept as the bytes that came off the wire. Pass-through
// calls move frames between the downstream and upstream streams without decoding
// them. A frame holds one reference on its buffer; sending the frame hands that
// reference to gRPC, which frees it once written.
type frame struct {
	buf mem.Buffer
}

// release drops the frame's buffer if gRPC did not take it (a send that failed
// before marshalling, or a frame received but never sent).
func (f *frame) release() {
	if f.buf != nil {
		f.buf.Free()
		f.buf = nil
	}
}

var errFrameEmpty = errors.New("criproxy: frame has no data (sent twice?)")

// rawCodec passes frames through untouched and delegates every other value
// (the typed requests and responses of intercepted methods) to gRPC's proto codec.
// Its name is "proto" because the bytes it carries are protobuf: the name becomes
// the content-subtype upstream, and containerd only accepts proto.
type rawCodec struct {
	proto encoding.CodecV2
}

func newRawCodec() rawCodec {
	return rawCodec{proto: encoding.GetCodecV2(protocodec.Name)}
}

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		b := f.buf
		if b == nil {
			return nil, errFrameEmpty
		}
		f.buf = nil // gRPC owns the reference now and frees it after writing.
		return mem.BufferSlice{b}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.release()
		// One buffer (the usual case) is kept by reference, without a copy;
		// a message spread over several buffers is joined into one pooled buffer.
		f.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (rawCodec) Name() string { return protocodec.Name }
