// Package wildcard matches strings against Kyverno's wildcard patterns.
package wildcard

// Match reports whether s matches pattern with Kyverno's wildcard semantics:
// '*' matches any run of characters (including '/' and none), '?' exactly one
// character, everything else itself; the whole string must match. Iterative
// with single-star backtracking: linear memory, no recursion, so a hostile
// pattern cannot blow the stack.
func Match(pattern, s string) bool {
	p, n := []rune(pattern), []rune(s)
	pi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && p[pi] == '*':
			// Before the literal case: a '*' in the pattern is always a
			// wildcard, even facing a '*' in s.
			star, mark = pi, ni
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
