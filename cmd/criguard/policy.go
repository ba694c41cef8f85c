package main

import (
	"context"
	"fmt"
	"io"
)

// runPolicy is a placeholder until its owner lands the real command.
func runPolicy(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "criguard policy: not built yet")
	return 2
}
