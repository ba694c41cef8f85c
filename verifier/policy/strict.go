package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// fieldError is a problem at a field path inside one document.
type fieldError struct {
	Path string
	Msg  string
}

func (e *fieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func errAt(path, format string, args ...any) *fieldError {
	return &fieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// decodeStrict decodes JSON (converted from one YAML document) into out, first
// walking the generic value against out's type so that an unknown field or a
// value of the wrong type is reported with its full path
// (spec.rules[0].attestors.entries[1].key.fil), which encoding/json cannot do.
func decodeStrict(data []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return errAt("", "not valid YAML/JSON: %v", err)
	}
	if err := checkValue(generic, reflect.TypeOf(out).Elem(), ""); err != nil {
		return err
	}
	d2 := json.NewDecoder(bytes.NewReader(data))
	d2.DisallowUnknownFields()
	if err := d2.Decode(out); err != nil {
		return errAt("", "%v", err)
	}
	return nil
}

var rawType = reflect.TypeOf(json.RawMessage(nil))

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func kindName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// checkValue reports the first mismatch between v and type t.
func checkValue(v any, t reflect.Type, path string) error {
	if t == rawType || t.Kind() == reflect.Interface {
		return nil // kept raw: the compiler decides what it means
	}
	if v == nil {
		return nil // null is "not set" for every field
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkValue(v, t.Elem(), path)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return errAt(path, "expected a mapping, got %s", kindName(v))
		}
		fields := structFields(t)
		for k, val := range m {
			f, ok := fields[k]
			if !ok {
				return errAt(join(path, k), "unknown field (known fields: %s)", knownFields(fields))
			}
			if err := checkValue(val, f.Type, join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return errAt(path, "expected a mapping, got %s", kindName(v))
		}
		for k, val := range m {
			if err := checkValue(val, t.Elem(), join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return errAt(path, "expected a list, got %s", kindName(v))
		}
		for i, val := range l {
			if err := checkValue(val, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if _, ok := v.(string); !ok {
			if _, isBool := v.(bool); isBool {
				return errAt(path, "expected a string, got a boolean (YAML reads unquoted yes, no, on, off, true and false as booleans: quote the value)")
			}
			return errAt(path, "expected a string, got %s", kindName(v))
		}
		return nil
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return errAt(path, "expected true or false, got %s", kindName(v))
		}
		return nil
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return errAt(path, "expected an integer, got %s", kindName(v))
		}
		if _, err := strconv.ParseInt(string(n), 10, 32); err != nil {
			return errAt(path, "expected an integer, got %s", n)
		}
		return nil
	}
	return errAt(path, "unsupported field type %s", t)
}

type fieldInfo struct{ Type reflect.Type }

// structFields maps JSON names to fields, flattening inline (embedded or
// `json:",inline"`) structs.
func structFields(t reflect.Type) map[string]fieldInfo {
	out := map[string]fieldInfo{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range structFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = fieldInfo{Type: f.Type}
	}
	return out
}

func knownFields(m map[string]fieldInfo) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
