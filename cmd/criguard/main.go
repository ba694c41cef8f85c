// Command criguard is a CRI proxy that lets kubelet pull and run only images whose
// exact digest carries a valid cosign signature under the node's policy.
//
// main only dispatches subcommands; each lives in its own file and wires flags to packages.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = ""

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"serve":              {"serve CRI on a socket, forwarding to containerd and enforcing the image policy", runServe},
		"verify":             {"verify the cosign signatures of images and print a verdict for each", runVerify},
		"verify-attestation": {"verify the in-toto attestations of images (cosign verify-attestation) and print a verdict for each", runVerifyAttestation},
		"policy":             {"check a policy file or directory and explain what it enforces", runPolicy},
		"node":               {"install or uninstall criguard on a node's host (used by the DaemonSet)", runNode},
		"version":            {"print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "criguard: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: criguard <command> [flags]")
	fmt.Fprintln(w)
	for _, name := range []string{"serve", "verify", "verify-attestation", "policy", "node", "version"} {
		fmt.Fprintf(w, "  %-8s %s\n", name, cmds[name].summary)
	}
	fmt.Fprintln(w, "\nRun 'criguard <command> -h' for a command's flags.")
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "criguard %s\n", versionString())
	return 0
}
