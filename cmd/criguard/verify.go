package main

import (
	"context"
	"fmt"
	"io"
)

// runVerify is a placeholder until its owner lands the real command.
func runVerify(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "criguard verify: not built yet")
	return 2
}
