package forward

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// UnknownField returns the path of the first field in m (at any depth) that the
// compiled cri-api does not know, such as "config.linux.security_context.#1234",
// or "" when every field is known.
//
// A judged request (PullImage, CreateContainer) carrying such a field is
// refused: the Guard cannot judge what it cannot read, and forwarding it would
// let a newer kubelet (or anyone on the socket) ask containerd for something
// the policy never saw, say an image reference in a field added after this
// cri-api. criguard must therefore be built with a cri-api at least as new as
// the kubelet's.
func UnknownField(m protoreflect.ProtoMessage) string {
	if m == nil {
		return ""
	}
	// The path is built only when something is found: every judged request
	// pays for the walk, so the clean case allocates nothing.
	rev, found := unknownIn(m.ProtoReflect())
	if !found {
		return ""
	}
	var b strings.Builder
	for i := len(rev) - 1; i >= 0; i-- {
		if b.Len() > 0 && !strings.HasPrefix(rev[i], "[") {
			b.WriteByte('.')
		}
		b.WriteString(rev[i])
	}
	return b.String()
}

// unknownIn reports whether m holds an unknown field, with its path as
// segments from the innermost out. Only message-typed fields can hold more.
func unknownIn(m protoreflect.Message) (rev []string, found bool) {
	if !m.IsValid() {
		return nil, false
	}
	if raw := m.GetUnknown(); len(raw) > 0 {
		return []string{"#" + firstFieldNumber(raw)}, true
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil || !m.Has(fd) {
				continue
			}
			m.Get(fd).Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if rev, found = unknownIn(mv.Message()); found {
					rev = append(rev, "["+strconv.Quote(k.String())+"]", string(fd.Name()))
				}
				return !found
			})
		case fd.Message() == nil || !m.Has(fd):
			continue
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				if rev, found = unknownIn(l.Get(j).Message()); found {
					rev = append(rev, "["+strconv.Itoa(j)+"]", string(fd.Name()))
					break
				}
			}
		default:
			if rev, found = unknownIn(m.Get(fd).Message()); found {
				rev = append(rev, string(fd.Name()))
			}
		}
		if found {
			return rev, true
		}
	}
	return nil, false
}

// firstFieldNumber names the first unknown field by its number (the wire format
// carries no names); "?" if the bytes do not even parse as a tag.
func firstFieldNumber(raw []byte) string {
	num, _, n := protowire.ConsumeTag(raw)
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(int32(num))
}
