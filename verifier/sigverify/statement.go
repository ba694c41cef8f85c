package sigverify

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/criguard/criguard/verifier/sigformat"
)

// statement is an in-toto statement with its predicate kept as raw JSON.
type statement struct {
	*sigformat.Statement
	predicate json.RawMessage
}

// parseStatement parses a DSSE payload as an in-toto statement and requires
// digest among its subjects.
func parseStatement(payloadType string, payload []byte, digest string) (*statement, error) {
	st, err := sigformat.ParseStatement(payloadType, payload)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("in-toto statement is not valid JSON: %w", err)
	}
	if st.PredicateType == "" {
		return nil, fmt.Errorf("in-toto statement has no predicateType")
	}
	if !st.HasSubject(digest) {
		subs := st.SubjectDigests()
		if len(subs) == 0 {
			return nil, fmt.Errorf("the in-toto statement names no sha256 subject, so it is not about %s", digest)
		}
		return nil, fmt.Errorf("the in-toto statement is about %s, not %s: it was made for another image", strings.Join(subs, ", "), digest)
	}
	return &statement{Statement: st, predicate: raw.Predicate}, nil
}
