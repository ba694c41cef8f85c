// Command fixturedump is the Go half of testdata/*/regenerate.sh: it dumps a
// registry into the fixture layout, and loads a dump into a registry so the
// scripts can check the dump itself (not the registry it came from) with cosign.
//
//	fixturedump dump -registry 127.0.0.1:PORT -out DIR [REPOSITORY...]
//	fixturedump load -registry 127.0.0.1:PORT -dir DIR
//	fixturedump tags -dir DIR   (prints "repository tag digest" lines from tags.json, sorted)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/criguard/criguard/internal/fixturedump"
	"github.com/criguard/criguard/internal/fixtureregistry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fixturedump: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: fixturedump dump|load|tags [flags]")
	}
	fs := flag.NewFlagSet("fixturedump "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("registry", "", "registry HOST:PORT (plain HTTP, e.g. 127.0.0.1:5000)")
	switch args[0] {
	case "dump":
		out := fs.String("out", "", "directory to write registry/ into (must not hold one yet)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *host == "" || *out == "" {
			return fmt.Errorf("dump needs -registry and -out")
		}
		return fixturedump.Dump(ctx, *host, fs.Args(), *out)
	case "load":
		dir := fs.String("dir", "", "fixture directory holding registry/tags.json")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *host == "" || *dir == "" {
			return fmt.Errorf("load needs -registry and -dir")
		}
		_, err := fixtureregistry.Load(ctx, *dir, "http://"+*host)
		return err
	case "tags":
		dir := fs.String("dir", "", "fixture directory holding registry/tags.json")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return fmt.Errorf("tags needs -dir")
		}
		return printTags(*dir, stdout)
	default:
		return fmt.Errorf("unknown subcommand %q: dump, load or tags", args[0])
	}
}

// printTags lets shell scripts read tags.json without a JSON tool.
func printTags(dir string, w io.Writer) error {
	raw, err := os.ReadFile(filepath.Join(dir, "registry", "tags.json"))
	if err != nil {
		return err
	}
	var tags map[string]map[string]string
	if err := json.Unmarshal(raw, &tags); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "registry", "tags.json"), err)
	}
	var lines []string
	for repo, ts := range tags {
		for tag, dg := range ts {
			lines = append(lines, repo+" "+tag+" "+dg)
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}
