package main

import (
	"context"
	"fmt"
	"io"
)

// runServe is a placeholder until its owner lands the real command.
func runServe(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "criguard serve: not built yet")
	return 2
}
