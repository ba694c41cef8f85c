package policy

import (
	"bytes"
	"encoding/json"
	"errors"
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

// errList collects every reason a document is refused.
type errList []error

// add records err, if any, and reports whether there was one.
func (l *errList) add(err error) bool {
	if err == nil {
		return false
	}
	*l = append(*l, err)
	return true
}

func (l errList) err() error { return errors.Join(l...) }

func errAt(path, format string, args ...any) *fieldError {
	return &fieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// decodeStrict decodes JSON (converted from one YAML document) into out, first
// walking the generic value against out's type so that every unknown field or
// value of the wrong type is reported with its full path
// (spec.rules[0].attestors.entries[1].key.fil), which encoding/json cannot do.
// Field problems are added to errs and decoding goes on without the unknown
// fields, so that the compiler can report the document's other problems too;
// the error returned is one that leaves nothing to compile.
func decodeStrict(data []byte, out any, errs *errList) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return errAt("", "not valid YAML/JSON: %v", err)
	}
	var found []error
	checkValue(generic, reflect.TypeOf(out).Elem(), "", &found)
	d2 := json.NewDecoder(bytes.NewReader(data))
	if len(found) == 0 {
		d2.DisallowUnknownFields()
	}
	if err := d2.Decode(out); err != nil {
		if len(found) > 0 {
			return errors.Join(found...) // a wrong type: the reasons found say which
		}
		return errAt("", "%v", err)
	}
	for _, e := range found {
		errs.add(e)
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

// checkValue adds every mismatch between v and type t to errs (sorted by
// key, so the report is stable), so that a document's refusal lists all of
// them.
func checkValue(v any, t reflect.Type, path string, errs *[]error) {
	if t == rawType || t.Kind() == reflect.Interface {
		return // kept raw: the compiler decides what it means
	}
	if v == nil {
		return // null is "not set" for every field
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkValue(v, t.Elem(), path, errs)
		return
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, errAt(path, "expected a mapping, got %s", kindName(v)))
			return
		}
		fields := structFields(t)
		for _, k := range sortedKeys(m) {
			val := m[k]
			f, ok := fields[k]
			if !ok {
				*errs = append(*errs, errAt(join(path, k), "unknown field (known fields: %s)", knownFields(fields)))
				continue
			}
			checkValue(val, f.Type, join(path, k), errs)
		}
		return
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, errAt(path, "expected a mapping, got %s", kindName(v)))
			return
		}
		for _, k := range sortedKeys(m) {
			checkValue(m[k], t.Elem(), join(path, k), errs)
		}
		return
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			*errs = append(*errs, errAt(path, "expected a list, got %s", kindName(v)))
			return
		}
		for i, val := range l {
			checkValue(val, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		return
	case reflect.String:
		if _, ok := v.(string); !ok {
			if _, isBool := v.(bool); isBool {
				*errs = append(*errs, errAt(path, "expected a string, got a boolean (YAML reads unquoted yes, no, on, off, true and false as booleans: quote the value)"))
				return
			}
			*errs = append(*errs, errAt(path, "expected a string, got %s", kindName(v)))
			return
		}
		return
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			*errs = append(*errs, errAt(path, "expected true or false, got %s", kindName(v)))
			return
		}
		return
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			*errs = append(*errs, errAt(path, "expected an integer, got %s", kindName(v)))
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, 32); err != nil {
			*errs = append(*errs, errAt(path, "expected an integer, got %s", n))
			return
		}
		return
	}
	*errs = append(*errs, errAt(path, "unsupported field type %s", t))
	return
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
