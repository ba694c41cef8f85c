package criproxy

import (
	"fmt"

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
	return unknownIn(m.ProtoReflect(), "")
}

func unknownIn(m protoreflect.Message, path string) string {
	if !m.IsValid() {
		return ""
	}
	if raw := m.GetUnknown(); len(raw) > 0 {
		return join(path, "#"+firstFieldNumber(raw))
	}
	var found string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		switch {
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if found = unknownIn(l.Get(i).Message(), fmt.Sprintf("%s[%d]", join(path, name), i)); found != "" {
					return false
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				found = unknownIn(mv.Message(), fmt.Sprintf("%s[%q]", join(path, name), k.String()))
				return found == ""
			})
		case fd.Message() != nil:
			found = unknownIn(v.Message(), join(path, name))
		}
		return found == ""
	})
	return found
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
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
