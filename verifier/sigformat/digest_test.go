package sigformat

import (
	"strings"
	"testing"
)

func TestValidDigest(t *testing.T) {
	tests := []struct {
		d    string
		want bool
	}{
		{"sha256:" + strings.Repeat("a", 64), true},
		{"sha256:" + strings.Repeat("0123456789abcdef", 4), true},
		{"", false},
		{"sha256:", false},
		{"sha512:" + strings.Repeat("a", 64), false},
		{"sha256:" + strings.Repeat("A", 64), false},
		{"sha256:" + strings.Repeat("a", 63), false},
		{"sha256:" + strings.Repeat("a", 65), false},
		{"sha256:" + strings.Repeat("g", 64), false},
		{strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		if got := ValidDigest(tt.d); got != tt.want {
			t.Errorf("ValidDigest(%q) = %v, want %v", tt.d, got, tt.want)
		}
	}
}
