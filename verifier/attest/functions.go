package attest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/blang/semver/v4"
	"github.com/jmespath-community/go-jmespath"
	"github.com/jmespath-community/go-jmespath/pkg/functions"
)

// Kyverno's custom JMESPath functions (pkg/engine/jmespath of Kyverno
// v1.19), those its documented verifyImages attestation conditions use and
// those as small, with Kyverno's argument types and results. They replace a
// library default of the same name (split, items, as Kyverno's do). Functions
// that reach outside the predicate (lookup, x509_decode, random, image
// normalisation) are left out: a condition naming one is refused at compile
// time.

var (
	str    = jmespath.ArgSpec{Types: []jmespath.JpType{jmespath.JpString}}
	num    = jmespath.ArgSpec{Types: []jmespath.JpType{jmespath.JpNumber}}
	strNum = jmespath.ArgSpec{Types: []jmespath.JpType{jmespath.JpString, jmespath.JpNumber}}
)

// kyvernoFunctions are the entries, with the time functions reading now
// (Kyverno reads the wall clock; tests pass a fixed one).
func kyvernoFunctions(now func() time.Time) []jmespath.FunctionEntry {
	fn := func(name string, h jmespath.JpFunction, args ...jmespath.ArgSpec) jmespath.FunctionEntry {
		return jmespath.FunctionEntry{Name: name, Arguments: args, Handler: h}
	}
	return []jmespath.FunctionEntry{
		fn("compare", strings2(func(a, b string) any { return strings.Compare(a, b) }), str, str),
		fn("equal_fold", strings2(func(a, b string) any { return strings.EqualFold(a, b) }), str, str),
		fn("replace", jpReplace, str, str, str, num),
		fn("replace_all", jpReplaceAll, str, str, str),
		fn("to_upper", strings1(strings.ToUpper), str),
		fn("to_lower", strings1(strings.ToLower), str),
		fn("trim", strings2(func(a, b string) any { return strings.Trim(a, b) }), str, str),
		fn("trim_prefix", strings2(func(a, b string) any { return strings.TrimPrefix(a, b) }), str, str),
		fn("split", strings2(func(a, b string) any { return toAnys(strings.Split(a, b)) }), str, str),
		fn("regex_replace_all", regexReplace(false), str, strNum, strNum),
		fn("regex_replace_all_literal", regexReplace(true), str, strNum, strNum),
		fn("regex_match", jpRegexMatch, str, strNum),
		fn("to_boolean", string1(jpToBoolean), str),
		fn("base64_decode", string1(jpBase64Decode), str),
		fn("base64_encode", strings1(func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }), str),
		fn("truncate", jpTruncate, str, num),
		fn("semver_compare", jpSemverCompare, str, str),
		fn("parse_json", string1(jpParseJSON), str),
		fn("items", jpItems, jmespath.ArgSpec{Types: []jmespath.JpType{jmespath.JpObject, jmespath.JpArray}}, str, str),
		fn("time_since", timeSince(now), str, str, str),
		fn("time_now", func([]any) (any, error) { return now().Format(time.RFC3339), nil }),
		fn("time_now_utc", func([]any) (any, error) { return now().UTC().Format(time.RFC3339), nil }),
		fn("time_to_cron", timesFn(1, timeToCron), str),
		fn("time_add", timeDuration(func(t time.Time, d time.Duration) any { return t.Add(d).Format(time.RFC3339) }), str, str),
		fn("time_parse", jpTimeParse, str, str),
		fn("time_utc", timesFn(1, func(t []time.Time) any { return t[0].UTC().Format(time.RFC3339) }), str),
		fn("time_diff", timesFn(2, func(t []time.Time) any { return t[1].Sub(t[0]).String() }), str, str),
		fn("time_before", timesFn(2, func(t []time.Time) any { return t[0].Before(t[1]) }), str, str),
		fn("time_after", timesFn(2, func(t []time.Time) any { return t[0].After(t[1]) }), str, str),
		// strictly after the start and before the end
		fn("time_between", timesFn(3, func(t []time.Time) any { return t[0].After(t[1]) && t[0].Before(t[2]) }), str, str, str),
		fn("time_truncate", timeDuration(func(t time.Time, d time.Duration) any { return t.Truncate(d).Format(time.RFC3339) }), str, str),
	}
}

// functionTable is the library's defaults with Kyverno's after them (a
// later entry of the same name wins), and the set of names a condition may
// call.
func functionTable(now func() time.Time) ([]jmespath.FunctionEntry, map[string]bool) {
	all := append(functions.GetDefaultFunctions(), kyvernoFunctions(now)...)
	names := make(map[string]bool, len(all))
	for _, f := range all {
		names[f.Name] = true
	}
	return all, names
}

// argOf reads argument i as a T (kind names T in the error); the library
// has checked the types, but a handler never panics on a surprise.
func argOf[T any](args []any, i int, kind string) (T, error) {
	var zero T
	if i >= len(args) {
		return zero, fmt.Errorf("argument %d is missing", i+1)
	}
	v, ok := args[i].(T)
	if !ok {
		return zero, fmt.Errorf("argument %d is %T, not %s", i+1, args[i], kind)
	}
	return v, nil
}

func argString(args []any, i int) (string, error) { return argOf[string](args, i, "a string") }

func argNumber(args []any, i int) (float64, error) { return argOf[float64](args, i, "a number") }

// firstN reads the first n arguments with read.
func firstN[T any](args []any, n int, read func([]any, int) (T, error)) ([]T, error) {
	out := make([]T, n)
	for i := range out {
		v, err := read(args, i)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// argStrings reads the first n arguments as strings.
func argStrings(args []any, n int) ([]string, error) { return firstN(args, n, argString) }

// argText is Kyverno's ifaceToString: a string, or a number written with
// float32 precision (as Kyverno does), or a boolean.
func argText(args []any, i int) (string, error) {
	if i >= len(args) {
		return "", fmt.Errorf("argument %d is missing", i+1)
	}
	switch v := args[i].(type) {
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 32), nil
	case int:
		return strconv.Itoa(v), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", fmt.Errorf("argument %d is %T, not a string or number", i+1, args[i])
}

func strings1(f func(string) string) jmespath.JpFunction {
	return string1(func(s string) (any, error) { return f(s), nil })
}

// string1 is a function of one string argument.
func string1(f func(string) (any, error)) jmespath.JpFunction {
	return func(args []any) (any, error) {
		a, err := argString(args, 0)
		if err != nil {
			return nil, err
		}
		return f(a)
	}
}

func strings2(f func(a, b string) any) jmespath.JpFunction {
	return func(args []any) (any, error) {
		s, err := argStrings(args, 2)
		if err != nil {
			return nil, err
		}
		return f(s[0], s[1]), nil
	}
}

func toAnys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func jpReplace(args []any) (any, error) {
	s, err := argStrings(args, 3)
	if err != nil {
		return nil, err
	}
	n, err := argNumber(args, 3)
	if err != nil {
		return nil, err
	}
	count := strings.Count(s[0], s[1])
	if n >= 0 && float64(count) > n {
		count = int(n)
	}
	if err := checkGrowth(s[0], s[1], s[2], count); err != nil {
		return nil, err
	}
	return strings.Replace(s[0], s[1], s[2], int(n)), nil
}

// MaxStringResult bounds a string a replacing function builds: a predicate
// is at most MaxPredicateSize, but replacing in it multiplies.
const MaxStringResult = 4 << 20

// checkGrowth refuses count replacements of old by repl in s that would
// build a string over MaxStringResult.
func checkGrowth(s, old, repl string, count int) error {
	if n := len(s) + count*(len(repl)-len(old)); n > MaxStringResult {
		return fmt.Errorf("the result would be %d bytes, over the %d-byte limit", n, MaxStringResult)
	}
	return nil
}

func jpReplaceAll(args []any) (any, error) {
	s, err := argStrings(args, 3)
	if err != nil {
		return nil, err
	}
	if err := checkGrowth(s[0], s[1], s[2], strings.Count(s[0], s[1])); err != nil {
		return nil, err
	}
	return strings.ReplaceAll(s[0], s[1], s[2]), nil
}

// regexReplace is regex_replace_all (with $1 expansion) or its _literal form.
func regexReplace(literal bool) jmespath.JpFunction {
	return func(args []any) (any, error) {
		re, texts, err := regexArgs(args, 2)
		if err != nil {
			return nil, err
		}
		return replaceBounded(re, texts[0], texts[1], literal)
	}
}

// regexArgs reads a regex function's pattern (argument 1, a string) and the n
// texts after it (strings or numbers, see argText), then compiles the pattern.
func regexArgs(args []any, n int) (*regexp.Regexp, []string, error) {
	expr, err := argString(args, 0)
	if err != nil {
		return nil, nil, err
	}
	texts := make([]string, n)
	for i := range texts {
		if texts[i], err = argText(args, i+1); err != nil {
			return nil, nil, err
		}
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, nil, err
	}
	return re, texts, nil
}

// replaceBounded is regexp's ReplaceAllString (or ReplaceAllLiteralString),
// the same matches ("All": successive non-overlapping matches, empty ones
// abutting a match ignored), stopping at MaxStringResult.
func replaceBounded(re *regexp.Regexp, src, repl string, literal bool) (string, error) {
	var out []byte
	last := 0
	for _, m := range re.FindAllStringSubmatchIndex(src, -1) {
		out = append(out, src[last:m[0]]...)
		if literal {
			out = append(out, repl...)
		} else {
			out = re.ExpandString(out, repl, src, m)
		}
		last = m[1]
		if len(out) > MaxStringResult {
			return "", fmt.Errorf("the result is over the %d-byte limit", MaxStringResult)
		}
	}
	out = append(out, src[last:]...)
	if len(out) > MaxStringResult {
		return "", fmt.Errorf("the result is over the %d-byte limit", MaxStringResult)
	}
	return string(out), nil
}

// jpRegexMatch: regex_match(regex, string or number), unanchored (Go RE2).
func jpRegexMatch(args []any) (any, error) {
	re, texts, err := regexArgs(args, 1)
	if err != nil {
		return nil, err
	}
	return re.MatchString(texts[0]), nil
}

func jpToBoolean(s string) (any, error) {
	switch strings.ToLower(s) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return nil, fmt.Errorf("to_boolean: lowercase argument must be 'true' or 'false' (provided: %q)", s)
}

func jpBase64Decode(s string) (any, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// jpTruncate keeps the first n runes (n < 1: none).
func jpTruncate(args []any) (any, error) {
	s, err := argString(args, 0)
	if err != nil {
		return nil, err
	}
	n, err := argNumber(args, 1)
	if err != nil {
		return nil, err
	}
	r := []rune(s)
	switch {
	case n < 1:
		return "", nil
	case n >= float64(len(r)):
		return s, nil
	}
	return string(r[:int(n)]), nil
}

// jpSemverCompare: whether the version is in the range, both in
// blang/semver's syntax (Kyverno's library). An unparsable version is an
// error, so the condition fails: Kyverno reads it as 0.0.0, which would let
// garbage pass a range such as '<2.0.0'.
func jpSemverCompare(args []any) (any, error) {
	s, err := argStrings(args, 2)
	if err != nil {
		return nil, err
	}
	version, err := semver.Parse(s[0])
	if err != nil {
		return nil, fmt.Errorf("semver_compare: version %q: %w", s[0], err)
	}
	inRange, err := semver.ParseRange(s[1])
	if err != nil {
		return nil, err
	}
	return inRange(version), nil
}

func jpParseJSON(s string) (any, error) {
	var out any
	err := json.Unmarshal([]byte(s), &out)
	return out, err
}

// kyvernoFunctionNames lists the Kyverno functions implemented, for messages.
func kyvernoFunctionNames() string {
	fs := kyvernoFunctions(time.Now)
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}

// jpItems is Kyverno's items(object or array, keyName, valueName): one
// {keyName: key, valueName: value} object per entry, keys sorted (an
// array's keys are its indexes).
func jpItems(args []any) (any, error) {
	names, err := argStrings(args[1:], 2)
	if err != nil {
		return nil, err
	}
	k, v := names[0], names[1]
	switch in := args[0].(type) {
	case map[string]any:
		keys := make([]string, 0, len(in))
		for key := range in {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		out := make([]any, 0, len(in))
		for _, key := range keys {
			out = append(out, map[string]any{k: key, v: in[key]})
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(in))
		for i, e := range in {
			out = append(out, map[string]any{k: float64(i), v: e})
		}
		return out, nil
	}
	return nil, fmt.Errorf("argument 1 is %T, not an object or array", args[0])
}
