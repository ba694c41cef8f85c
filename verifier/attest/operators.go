package attest

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/semver"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/criguard/criguard/verifier/wildcard"
)

// operator reports whether key and value (resolved) satisfy it. A key or
// value of a type the operator does not compare makes it false, as in Kyverno.
type operator func(key, value any) bool

// operators are Kyverno's condition operators, by lower-case name (Kyverno
// matches them case-insensitively).
var operators = map[string]operator{
	"equals":                      equals,
	"notequals":                   func(k, v any) bool { return !equals(k, v) },
	"in":                          setOp(allIn),
	"notin":                       setOp(func(k, v []string) bool { return !allIn(k, v) }),
	"anyin":                       setOp(anyIn),
	"allin":                       setOp(allIn),
	"anynotin":                    setOp(func(k, v []string) bool { return !allIn(k, v) }),
	"allnotin":                    setOp(func(k, v []string) bool { return !anyIn(k, v) }),
	"greaterthan":                 numeric(func(c int) bool { return c > 0 }),
	"greaterthanorequals":         numeric(func(c int) bool { return c >= 0 }),
	"lessthan":                    numeric(func(c int) bool { return c < 0 }),
	"lessthanorequals":            numeric(func(c int) bool { return c <= 0 }),
	"durationgreaterthan":         duration(func(c int) bool { return c > 0 }),
	"durationgreaterthanorequals": duration(func(c int) bool { return c >= 0 }),
	"durationlessthan":            duration(func(c int) bool { return c < 0 }),
	"durationlessthanorequals":    duration(func(c int) bool { return c <= 0 }),
}

func operatorNames() string {
	names := []string{"Equals", "NotEquals", "In", "NotIn", "AnyIn", "AllIn", "AnyNotIn", "AllNotIn",
		"GreaterThan", "GreaterThanOrEquals", "LessThan", "LessThanOrEquals",
		"DurationGreaterThan", "DurationGreaterThanOrEquals", "DurationLessThan", "DurationLessThanOrEquals"}
	return strings.Join(names, ", ")
}

// number reads a JSON or YAML number.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// equals is Kyverno's Equals: by the key's type; a string value is a
// wildcard pattern (* and ?) for a string key; numbers compare as numbers,
// also against a numeric string value; durations and resource quantities
// compare as such.
func equals(key, value any) bool {
	if kn, ok := number(key); ok {
		if vn, ok := number(value); ok {
			return kn == vn
		}
		if s, ok := value.(string); ok {
			f, err := strconv.ParseFloat(s, 64)
			return err == nil && f == kn
		}
		return false
	}
	switch k := key.(type) {
	case bool:
		v, ok := value.(bool)
		return ok && v == k
	case string:
		if kd, vd, ok := durations(k, value); ok {
			return kd == vd
		}
		if kq, vq, ok := quantities(k, value); ok {
			return kq.Cmp(vq) == 0
		}
		v, ok := value.(string)
		return ok && wildcard.Match(v, k)
	case map[string]any, []any:
		return reflect.DeepEqual(normalize(key), normalize(value))
	}
	return false
}

// normalize re-encodes a value through JSON so YAML integers and JSON floats
// compare equal.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return v
	}
	return out
}

// durations parses key and value as Go durations (both strings).
func durations(key string, value any) (time.Duration, time.Duration, bool) {
	v, ok := value.(string)
	if !ok {
		return 0, 0, false
	}
	kd, err1 := time.ParseDuration(key)
	vd, err2 := time.ParseDuration(v)
	return kd, vd, err1 == nil && err2 == nil
}

// quantities parses key and value as Kubernetes resource quantities ("1Gi",
// "500m"), both strings, as Kyverno compares them.
func quantities(key string, value any) (resource.Quantity, resource.Quantity, bool) {
	v, ok := value.(string)
	if !ok {
		return resource.Quantity{}, resource.Quantity{}, false
	}
	kq, err1 := resource.ParseQuantity(key)
	vq, err2 := resource.ParseQuantity(v)
	return kq, vq, err1 == nil && err2 == nil
}

// setOp applies a set comparison to the key's and value's string sets.
func setOp(f func(key, value []string) bool) operator {
	return func(key, value any) bool {
		k, ok := keySet(key)
		if !ok {
			return false
		}
		v, ok := valueSet(value)
		if !ok {
			return false
		}
		return f(k, v)
	}
}

// keySet is a scalar key as a one-element set, or a list's elements.
func keySet(key any) ([]string, bool) {
	switch k := key.(type) {
	case string:
		return []string{k}, true
	case []any:
		out := make([]string, 0, len(k))
		for _, e := range k {
			out = append(out, scalarString(e))
		}
		return out, true
	}
	if n, ok := number(key); ok {
		return []string{strconv.FormatFloat(n, 'f', -1, 64)}, true
	}
	return nil, false
}

// valueSet is a list's elements, or a string holding a JSON array of
// strings, or a string as a one-element set.
func valueSet(value any) ([]string, bool) {
	switch v := value.(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			out = append(out, scalarString(e))
		}
		return out, true
	case string:
		var arr []string
		if strings.HasPrefix(strings.TrimSpace(v), "[") {
			if json.Unmarshal([]byte(v), &arr) != nil {
				return nil, false
			}
			return arr, true
		}
		return []string{v}, true
	}
	return nil, false
}

func scalarString(v any) string {
	if n, ok := number(v); ok {
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// member reports whether k matches an element of set (either side may be a
// wildcard pattern, as in Kyverno).
func member(k string, set []string) bool {
	for _, v := range set {
		if wildcard.Match(v, k) || wildcard.Match(k, v) {
			return true
		}
	}
	return false
}

func anyIn(key, value []string) bool {
	for _, k := range key {
		if member(k, value) {
			return true
		}
	}
	return false
}

func allIn(key, value []string) bool {
	for _, k := range key {
		if !member(k, value) {
			return false
		}
	}
	return true
}

// numeric compares as Kyverno's numeric operators: durations (two duration
// strings), resource quantities (two quantity strings), numbers (numeric
// strings too), then semantic versions.
func numeric(ok func(cmp int) bool) operator {
	return func(key, value any) bool {
		if ks, isStr := key.(string); isStr {
			if kd, vd, dur := durations(ks, value); dur {
				return ok(compare(float64(kd), float64(vd)))
			}
			if kq, vq, q := quantities(ks, value); q {
				return ok(kq.Cmp(vq))
			}
		}
		// A numeric key compares numerically or not at all (Kyverno parses
		// the key as a number before trying versions).
		if kn, isNum := numberOrNumeric(key); isNum {
			vn, ok2 := numberOrNumeric(value)
			return ok2 && ok(compare(kn, vn))
		}
		ks, ok1 := key.(string)
		vs, ok2 := value.(string)
		if ok1 && ok2 && semver.IsValid("v"+ks) && semver.IsValid("v"+vs) {
			return ok(semver.Compare("v"+ks, "v"+vs))
		}
		return false
	}
}

// duration compares as Kyverno's Duration* operators: numbers are seconds,
// strings Go durations.
func duration(ok func(cmp int) bool) operator {
	return func(key, value any) bool {
		kd, ok1 := asDuration(key)
		vd, ok2 := asDuration(value)
		return ok1 && ok2 && ok(compare(float64(kd), float64(vd)))
	}
}

func asDuration(v any) (time.Duration, bool) {
	if n, ok := number(v); ok {
		if math.IsNaN(n) || math.Abs(n) > float64(math.MaxInt64/int64(time.Second)) {
			return 0, false
		}
		return time.Duration(n * float64(time.Second)), true
	}
	if s, ok := v.(string); ok {
		d, err := time.ParseDuration(s)
		return d, err == nil
	}
	return 0, false
}

func numberOrNumeric(v any) (float64, bool) {
	if n, ok := number(v); ok {
		return n, !math.IsNaN(n)
	}
	if s, ok := v.(string); ok {
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil && !math.IsNaN(f)
	}
	return 0, false
}

func compare(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
