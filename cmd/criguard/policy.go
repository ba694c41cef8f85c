package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
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
	explain(stdout, set)
	return 0
}

func explain(w io.Writer, set *policy.Set) {
	rules := 0
	for _, p := range set.Policies {
		rules += len(p.Rules)
		where := fmt.Sprintf("%s: document %d", p.File, p.Document)
		ns := "all namespaces"
		if p.Namespace != "" {
			ns = "namespace " + p.Namespace + " only"
		}
		fmt.Fprintf(w, "%s %q (%s)\n", p.Source, p.Name, where)
		fmt.Fprintf(w, "  applies to: %s\n", ns)
		fmt.Fprintf(w, "  mode: %s", p.Mode)
		for _, o := range p.ModeOverrides {
			fmt.Fprintf(w, "; %s in namespaces [%s]", o.Mode, strings.Join(o.Namespaces, ", "))
		}
		fmt.Fprintln(w)
		if p.Source != policy.SourceImagePolicy && p.Mode == policy.Audit {
			fmt.Fprintln(w, "    note: Audit is Kyverno's default when validationFailureAction/failureAction is not set: failures are only reported")
		}
		fmt.Fprintf(w, "  failurePolicy: %s, verification timeout: %s, cache: ttl %s, max %d entries\n", p.FailurePolicy, p.Timeout, p.CacheTTL, p.CacheMax)
		switch p.Unmatched {
		case policy.Deny:
			fmt.Fprintln(w, "  unmatchedImages: Deny (images no rule of any policy matches are denied)")
		case policy.Allow:
			fmt.Fprintln(w, "  unmatchedImages: Allow")
		}
		for _, r := range p.Rules {
			explainRule(w, r)
		}
	}
	unmatched := "allowed (no ImagePolicy says unmatchedImages: Deny)"
	for _, p := range set.Policies {
		if p.Unmatched == policy.Deny {
			unmatched = fmt.Sprintf("denied (ImagePolicy %q)", p.Name)
			if p.Mode == policy.Audit {
				unmatched = fmt.Sprintf("reported, not denied (ImagePolicy %q in Audit mode)", p.Name)
			}
			break
		}
	}
	fmt.Fprintf(w, "images no rule matches: %s\n", unmatched)
	if len(set.Warnings) > 0 {
		fmt.Fprintln(w, "skipped:")
		for _, x := range set.Warnings {
			fmt.Fprintf(w, "  %s\n", x)
		}
	}
	fmt.Fprintf(w, "OK: %d policies, %d rules\n", len(set.Policies), rules)
}

func explainRule(w io.Writer, r *policy.Rule) {
	fmt.Fprintf(w, "  rule %q: %s\n", r.Name, r.Action)
	if r.Mode != "" {
		fmt.Fprintf(w, "    mode: %s (the rule's own failureAction)\n", r.Mode)
	}
	fmt.Fprintf(w, "    images: %s\n", strings.Join(r.Images, ", "))
	if len(r.ExcludeImages) > 0 {
		fmt.Fprintf(w, "    except: %s\n", strings.Join(r.ExcludeImages, ", "))
	}
	fmt.Fprintf(w, "    namespaces: %s\n", describeNamespaces(r))
	if r.RequireDigestReference {
		fmt.Fprintln(w, "    images must be referenced by digest (verifyDigest: true, mutateDigest: false)")
	}
	if r.NoCache {
		fmt.Fprintln(w, "    verdicts are not cached (useCache: false)")
	}
	for i, a := range r.Attestors {
		names := make([]string, len(a.Keys))
		for j, k := range a.Keys {
			names[j] = fmt.Sprintf("%s (%s)", k.Name, k.Algorithm)
		}
		label := "keys"
		if len(r.Attestors) > 1 {
			label = fmt.Sprintf("attestor set %d", i+1)
		}
		fmt.Fprintf(w, "    %s: %d of %d must verify: %s\n", label, a.Count, len(a.Keys), strings.Join(names, ", "))
		if a.Repository != "" {
			fmt.Fprintf(w, "      signatures looked up in %s\n", a.Repository)
		}
	}
}

func describeNamespaces(r *policy.Rule) string {
	inc := filterText(r.Match)
	if inc == "" {
		inc = "all"
	}
	if r.Policy.Namespace != "" {
		inc = r.Policy.Namespace + " (the Policy's namespace)"
	}
	if exc := filterText(r.Exclude); exc != "" {
		inc += "; excluding " + exc
	}
	return inc
}

func filterText(m policy.NamespaceMatch) string {
	var parts []string
	for _, f := range m.Filters {
		switch {
		case f.Never:
			parts = append(parts, "(a filter that selects no pod creation)")
		case len(f.Namespaces) == 0:
			parts = append(parts, "all")
		default:
			ns := append([]string(nil), f.Namespaces...)
			sort.Strings(ns)
			parts = append(parts, "["+strings.Join(ns, ", ")+"]")
		}
	}
	if len(parts) == 0 {
		return ""
	}
	sep := " or "
	if m.All {
		sep = " and "
	}
	return strings.Join(parts, sep)
}
