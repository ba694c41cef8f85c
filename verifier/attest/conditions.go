// Package attest judges the predicate of a verified in-toto attestation with
// Kyverno's attestation conditions: `conditions` is a list of blocks, each with
// `any` and/or `all` conditions; every block must hold. A condition compares
// a key with a value by a Kyverno operator, where `{{ expression }}` in keys
// and values is a JMESPath query over the predicate (as in Kyverno's
// verifyImages attestations, whose context root is the predicate). Kyverno's
// own JMESPath functions that attestation conditions use (time_since,
// regex_match, …) are implemented with Kyverno v1.19's semantics, and a
// `{{ }}` nested in another's literal is substituted first, as Kyverno does.
//
// Anything that cannot be evaluated — an unknown operator, a JMESPath syntax
// error, a query that finds nothing — is an error, never a pass.
package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits on one set of conditions (a policy's text is bounded before).
const (
	MaxConditions    = 256
	MaxExpressionLen = 4 << 10
	// MaxPredicateSize bounds the predicate JSON judged.
	MaxPredicateSize = 1 << 20
)

// Condition is one Kyverno condition.
type Condition struct {
	Key      any    `json:"key"`
	Operator string `json:"operator"`
	Value    any    `json:"value,omitempty"`
	Message  string `json:"message,omitempty"`
}

// AnyAllConditions is one Kyverno condition block: at least one of Any and
// every one of All must hold (an empty list holds).
type AnyAllConditions struct {
	Any []Condition `json:"any,omitempty"`
	All []Condition `json:"all,omitempty"`
}

// Conditions are compiled condition blocks, ready to evaluate many times.
type Conditions struct {
	blocks []compiledBlock
}

type compiledBlock struct {
	any, all []compiled
}

type compiled struct {
	src   Condition
	key   template
	value template
	op    operator
}

// Option changes how Compile compiles.
type Option func(*options)

type options struct {
	now func() time.Time
}

// WithClock sets the clock Kyverno's time functions (time_now, time_since
// with no end, …) read; the default is the wall clock.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// Compile checks and compiles condition blocks: known operators, valid
// JMESPath in every `{{ }}` (nested ones too), calling only JMESPath's
// functions and the Kyverno functions implemented here.
func Compile(blocks []AnyAllConditions, opts ...Option) (*Conditions, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	e := newEnv(o.now)
	n := 0
	c := &Conditions{}
	for bi, b := range blocks {
		var cb compiledBlock
		for _, list := range []struct {
			name string
			in   []Condition
			out  *[]compiled
		}{{"any", b.Any, &cb.any}, {"all", b.All, &cb.all}} {
			for ci, cond := range list.in {
				if n++; n > MaxConditions {
					return nil, fmt.Errorf("more than %d conditions", MaxConditions)
				}
				cc, err := compileCondition(cond, e)
				if err != nil {
					return nil, fmt.Errorf("conditions[%d].%s[%d]: %w", bi, list.name, ci, err)
				}
				*list.out = append(*list.out, cc)
			}
		}
		c.blocks = append(c.blocks, cb)
	}
	return c, nil
}

func compileCondition(cond Condition, e *env) (compiled, error) {
	op, ok := operators[strings.ToLower(cond.Operator)]
	if !ok {
		return compiled{}, fmt.Errorf("unknown operator %q (Kyverno's are %s)", cond.Operator, operatorNames())
	}
	key, err := compileTemplate(cond.Key, e)
	if err != nil {
		return compiled{}, fmt.Errorf("key: %w", err)
	}
	value, err := compileTemplate(cond.Value, e)
	if err != nil {
		return compiled{}, fmt.Errorf("value: %w", err)
	}
	return compiled{src: cond, key: key, value: value, op: op}, nil
}

// Evaluate judges a predicate (JSON). It returns nil when every block holds,
// else an error naming the first condition that does not hold (its message
// when the policy gives one) or could not be evaluated.
func (c *Conditions) Evaluate(predicate []byte) error {
	if len(predicate) > MaxPredicateSize {
		return fmt.Errorf("the predicate is %d bytes, larger than the %d-byte limit", len(predicate), MaxPredicateSize)
	}
	dec := json.NewDecoder(bytes.NewReader(predicate))
	var data any
	if err := dec.Decode(&data); err != nil {
		return fmt.Errorf("the predicate is not JSON: %w", err)
	}
	for i, b := range c.blocks {
		if err := b.evaluate(data); err != nil {
			return fmt.Errorf("attestation condition block %d: %w", i+1, err)
		}
	}
	return nil
}

func (b compiledBlock) evaluate(data any) error {
	for _, c := range b.all {
		if err := c.evaluate(data); err != nil {
			return err
		}
	}
	if len(b.any) == 0 {
		return nil
	}
	var whys []string
	for _, c := range b.any {
		err := c.evaluate(data)
		if err == nil {
			return nil
		}
		whys = append(whys, err.Error())
	}
	return errors.New("none of its `any` conditions holds: " + strings.Join(whys, "; "))
}

// evaluate returns nil when the condition holds.
func (c compiled) evaluate(data any) error {
	key, err := c.key.resolve(data)
	if err != nil {
		return fmt.Errorf("condition %s: key: %w", c.describe(), err)
	}
	value, err := c.value.resolve(data)
	if err != nil {
		return fmt.Errorf("condition %s: value: %w", c.describe(), err)
	}
	if c.op(key, value) {
		return nil
	}
	if c.src.Message != "" {
		return errors.New(c.src.Message)
	}
	return fmt.Errorf("condition %s does not hold: the key is %s", c.describe(), show(key))
}

func (c compiled) describe() string {
	return fmt.Sprintf("%s %s %s", show(c.src.Key), c.src.Operator, show(c.src.Value))
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
