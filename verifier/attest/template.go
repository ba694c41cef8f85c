package attest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/jmespath-community/go-jmespath/pkg/interpreter"
	"github.com/jmespath-community/go-jmespath/pkg/parsing"
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
	expr string // as written, for messages
	ast  parsing.ASTNode
	// inner, when the expression holds nested `{{ }}` (Kyverno substitutes
	// the innermost first, as text): it yields the expression text, which
	// must parse to the shape of ast (only literal values may differ).
	inner *template
	env   *env
}

// env is what the variables of one Compile share: the function table (with
// its clock) and the names a condition may call.
type env struct {
	caller interpreter.FunctionCaller
	names  map[string]bool
}

func newEnv(now func() time.Time) *env {
	funcs, names := functionTable(now)
	return &env{caller: interpreter.NewFunctionCaller(funcs...), names: names}
}

func compileTemplate(v any, e *env) (template, error) {
	switch t := v.(type) {
	case string:
		return compileString(t, e)
	case []any:
		out := template{kind: kindList}
		for i, x := range t {
			c, err := compileTemplate(x, e)
			if err != nil {
				return template{}, fmt.Errorf("[%d]: %w", i, err)
			}
			out.list = append(out.list, c)
		}
		return out, nil
	case map[string]any:
		out := template{kind: kindMap, obj: map[string]template{}}
		for k, x := range t {
			c, err := compileTemplate(x, e)
			if err != nil {
				return template{}, fmt.Errorf("%s: %w", k, err)
			}
			out.obj[k] = c
		}
		return out, nil
	}
	return template{kind: kindLiteral, literal: v}, nil
}

func compileString(s string, e *env) (template, error) {
	var parts []part
	rest := s
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			break
		}
		j := closingBraces(rest[i+2:])
		if j < 0 {
			return template{}, fmt.Errorf("%q opens {{ without closing }}", s)
		}
		v, err := compileVariable(rest[i+2:i+2+j], e)
		if err != nil {
			return template{}, err
		}
		if i > 0 {
			parts = append(parts, part{text: rest[:i]})
		}
		parts = append(parts, part{v: v})
		rest = rest[i+2+j+2:]
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

// closingBraces is the index in s (after an opening "{{") of the "}}" that
// closes it, past nested "{{ }}" pairs; -1 if none does.
func closingBraces(s string) int {
	depth := 0
	for i := 0; i+1 < len(s); i++ {
		switch s[i : i+2] {
		case "{{":
			depth++
			i++
		case "}}":
			if depth == 0 {
				return i
			}
			depth--
			i++
		}
	}
	return -1
}

// nestedPlaceholder stands for a nested variable's value when the outer
// expression is checked at compile time: valid inside '…' and `…`, invalid
// bare, so a nested variable must sit inside a literal.
const nestedPlaceholder = "0"

// compileVariable compiles the body of one {{ }}: JMESPath, maybe with
// nested {{ }} inside its literals.
func compileVariable(body string, e *env) (*variable, error) {
	v := &variable{expr: strings.TrimSpace(body), env: e}
	if len(v.expr) > MaxExpressionLen {
		return nil, fmt.Errorf("a JMESPath expression of %d bytes is over the %d-byte limit", len(v.expr), MaxExpressionLen)
	}
	check := v.expr
	if strings.Contains(body, "{{") {
		inner, err := compileString(body, e)
		if err != nil {
			return nil, err
		}
		v.inner = &inner
		check = strings.TrimSpace(inner.placeholderText())
	}
	ast, err := parsing.NewParser().Parse(check)
	if err != nil {
		if v.inner != nil {
			return nil, fmt.Errorf("{{ %s }} is not valid JMESPath with its nested {{ }} inside a '…' or `…` literal: %w", v.expr, err)
		}
		return nil, fmt.Errorf("{{ %s }} is not valid JMESPath: %w", v.expr, err)
	}
	if err := e.checkFunctions(ast); err != nil {
		return nil, fmt.Errorf("{{ %s }}: %w", v.expr, err)
	}
	v.ast = ast
	return v, nil
}

// placeholderText is the template's text with each variable replaced by
// nestedPlaceholder.
func (t template) placeholderText() string {
	switch t.kind {
	case kindWhole:
		return nestedPlaceholder
	case kindParts:
		var b strings.Builder
		for _, p := range t.parts {
			if p.v == nil {
				b.WriteString(p.text)
			} else {
				b.WriteString(nestedPlaceholder)
			}
		}
		return b.String()
	}
	return stringify(t.literal)
}

// checkFunctions refuses a call of a function that is neither JMESPath's
// nor one of Kyverno's implemented here, naming it.
func (e *env) checkFunctions(n parsing.ASTNode) error {
	if n.NodeType == parsing.ASTFunctionExpression {
		name, _ := n.Value.(string)
		if !e.names[name] {
			return fmt.Errorf("unknown JMESPath function %s() (criguard implements JMESPath's and Kyverno's %s)", name, kyvernoFunctionNames())
		}
	}
	for _, c := range n.Children {
		if err := e.checkFunctions(c); err != nil {
			return err
		}
	}
	return nil
}

// sameShape reports whether b is a with at most its literals' values
// changed: what substituting a value into a literal may do, and nothing
// more (a value that closes the literal and adds to the expression is
// refused, where Kyverno would evaluate it).
func sameShape(a, b parsing.ASTNode) bool {
	if a.NodeType != b.NodeType || len(a.Children) != len(b.Children) {
		return false
	}
	if a.NodeType != parsing.ASTLiteral && !reflect.DeepEqual(a.Value, b.Value) {
		return false
	}
	for i := range a.Children {
		if !sameShape(a.Children[i], b.Children[i]) {
			return false
		}
	}
	return true
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
	ast := v.ast
	if v.inner != nil {
		text, err := v.inner.resolve(data)
		if err != nil {
			return nil, err
		}
		expr := strings.TrimSpace(stringify(text))
		if len(expr) > MaxExpressionLen {
			return nil, fmt.Errorf("{{ %s }} becomes a JMESPath expression of %d bytes, over the %d-byte limit", v.expr, len(expr), MaxExpressionLen)
		}
		if ast, err = parsing.NewParser().Parse(expr); err != nil {
			return nil, fmt.Errorf("{{ %s }} becomes %q, which is not valid JMESPath: %w", v.expr, expr, err)
		}
		if !sameShape(v.ast, ast) {
			return nil, fmt.Errorf("{{ %s }} becomes %q: a value substituted into it changes the expression beyond its literal; refused", v.expr, expr)
		}
	}
	r, err := interpreter.NewInterpreter(data, v.env.caller, nil).Execute(ast, data)
	if err != nil {
		return nil, fmt.Errorf("{{ %s }}: %w", v.expr, err)
	}
	if r == nil {
		return nil, fmt.Errorf("{{ %s }} finds nothing in the predicate", v.expr)
	}
	return r, nil
}

// stringify is a value as Kyverno substitutes it into text: a string as it
// is, anything else as JSON.
func stringify(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
