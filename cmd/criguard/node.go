package main

import (
	"context"
	"fmt"
	"io"
)

// runNode is a placeholder until its owner lands the real command.
func runNode(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "criguard node: not built yet")
	return 2
}
