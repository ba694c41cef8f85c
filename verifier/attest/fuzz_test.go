package attest

import (
	"encoding/json"
	"testing"
)

// FuzzConditions compiles fuzzed condition blocks and evaluates them on a
// fuzzed predicate: never a panic.
func FuzzConditions(f *testing.F) {
	f.Add(`[{"all":[{"key":"{{ scanner.result.summary.critical }}","operator":"Equals","value":0}]}]`, vulnPredicate)
	f.Add(`[{"any":[{"key":"{{ a[?b > `+"`1`"+`] }}","operator":"AnyIn","value":["x*"]}]}]`, `{"a":[{"b":2}]}`)
	f.Add(`[{"all":[{"key":"{{ time_since('','{{ metadata.scanFinishedOn }}','') }}","operator":"LessThanOrEquals","value":"168h"}]}]`, vulnPredicate)
	f.Add(`[{"all":[{"key":"{{ regex_match('^x$','{{ builder.id}}') }}","operator":"Equals","value":true}]}]`, `{"builder":{"id":"x"}}`)
	f.Add(`[{"all":[{"key":"{{ items(parse_json('{{ a }}'),'k','v') }}","operator":"AnyIn","value":["x"]}]}]`, `{"a":"{\"b\":1}"}`)
	f.Fuzz(func(t *testing.T, conds, predicate string) {
		var blocks []AnyAllConditions
		if json.Unmarshal([]byte(conds), &blocks) != nil {
			return
		}
		c, err := Compile(blocks)
		if err != nil {
			return
		}
		_ = c.Evaluate([]byte(predicate))
	})
}
