package attest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmespath-community/go-jmespath"
)

// template is a condition key or value: a literal, or a string holding
// `{{ jmespath }}` variables, or a list or map of those.
type template struct {
	literal any
	// whole: the string is exactly one variable, which resolves to its typed
	// result (a number stays a number), as Kyverno does.
	whole *variable
	// parts of a string that mixes text and variables (stringified).
	parts []part
	list  []template
	obj   map[string]template
	kind  int
}

const (
	kindLiteral = iota
	kindWhole
	kindParts
	kindList
	kindMap
)

type part struct {
	text string
	v    *variable
}

type variable struct {
	expr string
	jp   jmespath.JMESPath
}

func compileTemplate(v any) (template, error) {
	switch t := v.(type) {
	case string:
		return compileString(t)
	case []any:
		out := template{kind: kindList}
		for i, e := range t {
			c, err := compileTemplate(e)
			if err != nil {
				return template{}, fmt.Errorf("[%d]: %w", i, err)
			}
			out.list = append(out.list, c)
		}
		return out, nil
	case map[string]any:
		out := template{kind: kindMap, obj: map[string]template{}}
		for k, e := range t {
			c, err := compileTemplate(e)
			if err != nil {
				return template{}, fmt.Errorf("%s: %w", k, err)
			}
			out.obj[k] = c
		}
		return out, nil
	}
	return template{kind: kindLiteral, literal: v}, nil
}

func compileString(s string) (template, error) {
	var parts []part
	rest := s
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			return template{}, fmt.Errorf("%q opens {{ without closing }}", s)
		}
		expr := strings.TrimSpace(rest[i+2 : i+j])
		if len(expr) > MaxExpressionLen {
			return template{}, fmt.Errorf("a JMESPath expression of %d bytes is over the %d-byte limit", len(expr), MaxExpressionLen)
		}
		jp, err := jmespath.Compile(expr)
		if err != nil {
			return template{}, fmt.Errorf("{{ %s }} is not valid JMESPath: %w", expr, err)
		}
		if i > 0 {
			parts = append(parts, part{text: rest[:i]})
		}
		parts = append(parts, part{v: &variable{expr: expr, jp: jp}})
		rest = rest[i+j+2:]
	}
	switch {
	case len(parts) == 0:
		return template{kind: kindLiteral, literal: s}, nil
	case len(parts) == 1 && parts[0].v != nil && rest == "":
		return template{kind: kindWhole, whole: parts[0].v}, nil
	}
	if rest != "" {
		parts = append(parts, part{text: rest})
	}
	return template{kind: kindParts, parts: parts}, nil
}

// resolve substitutes the variables with their values in data.
func (t template) resolve(data any) (any, error) {
	switch t.kind {
	case kindWhole:
		return t.whole.search(data)
	case kindParts:
		var b strings.Builder
		for _, p := range t.parts {
			if p.v == nil {
				b.WriteString(p.text)
				continue
			}
			v, err := p.v.search(data)
			if err != nil {
				return nil, err
			}
			b.WriteString(stringify(v))
		}
		return b.String(), nil
	case kindList:
		out := make([]any, 0, len(t.list))
		for _, e := range t.list {
			v, err := e.resolve(data)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case kindMap:
		out := make(map[string]any, len(t.obj))
		for k, e := range t.obj {
			v, err := e.resolve(data)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	}
	return t.literal, nil
}

// search runs the query; a query that finds nothing is an error, as an
// unresolved variable is in Kyverno.
func (v *variable) search(data any) (any, error) {
	r, err := v.jp.Search(data)
	if err != nil {
		return nil, fmt.Errorf("{{ %s }}: %w", v.expr, err)
	}
	if r == nil {
		return nil, fmt.Errorf("{{ %s }} finds nothing in the predicate", v.expr)
	}
	return r, nil
}

func stringify(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(t)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
