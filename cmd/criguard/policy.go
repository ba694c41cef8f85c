package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/criguard/criguard/verifier/policy"
)

// runPolicy implements `criguard policy check PATH`: load the policy exactly as
// serve would, then explain it, or list every reason it is refused.
// Exit codes: 0 valid, 1 invalid, 2 usage.
func runPolicy(_ context.Context, args []string, stdout, stderr io.Writer) int {
	usage := func() {
		fmt.Fprintln(stderr, "usage: criguard policy check PATH")
		fmt.Fprintln(stderr, "\nValidates a policy file, or a directory of *.yaml/*.yml/*.json files, and explains")
		fmt.Fprintln(stderr, "what it enforces. Exit status: 0 valid, 1 invalid, 2 usage error.")
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return 0
	}
	if args[0] != "check" {
		fmt.Fprintf(stderr, "criguard policy: unknown subcommand %q\n", args[0])
		usage()
		return 2
	}
	fs := flag.NewFlagSet("policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = usage
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		usage()
		return 2
	}
	path := fs.Arg(0)
	set, err := policy.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "criguard policy check: %s is invalid; criguard would refuse to load it:\n", path)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  %s\n", line)
		}
		return 1
	}
	policy.Describe(stdout, set)
	return 0
}
