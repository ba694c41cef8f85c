package cosign

import "testing"

// TestDistinctSigners: each counted signer is credited to a different passing
// attestor, so neither one signer matching many attestors nor one attestor
// matching many signers inflates the count.
func TestDistinctSigners(t *testing.T) {
	cases := []struct {
		name      string
		signersOf map[int][]string
		want      int
	}{
		{"none", map[int][]string{}, 0},
		{"one signer, two attestors", map[int][]string{0: {"alice"}, 1: {"alice"}}, 1},
		{"one attestor, two signers", map[int][]string{0: {"alice", "bob"}}, 1},
		{"two attestors, two signers", map[int][]string{0: {"alice"}, 1: {"alice", "bob"}}, 2},
		{"crediting needs a swap", map[int][]string{0: {"alice", "bob"}, 1: {"alice"}}, 2},
		{"three attestors, two signers", map[int][]string{0: {"alice"}, 1: {"alice", "bob"}, 2: {"bob"}}, 2},
		{"nothing proven", map[int][]string{0: {""}, 1: {""}}, 0},
		{"a signer proven twice", map[int][]string{0: {"alice", "alice"}, 1: {"bob"}}, 2},
	}
	for _, c := range cases {
		for range 20 { // map order varies: the count must not
			if got := distinctSigners(c.signersOf); got != c.want {
				t.Fatalf("%s: %d, want %d", c.name, got, c.want)
			}
		}
	}
}
