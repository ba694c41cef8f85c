package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/criguard/criguard/systemd/nodeinstall"
	"github.com/criguard/criguard/systemd/unit"
)

const nodeUsage = `usage: criguard node <install|uninstall|sync|status> [flags]

  install    copy criguard, its unit and the policy to the host, point kubelet at
             criguard and wait until kubelet is healthy through it
  uninstall  point kubelet back at containerd, then remove criguard's unit and binary
  sync       copy the policy (and keys) directories to the host
  status     exit 0 when criguard is installed and serving (--expect uninstalled: when nothing is left)
`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, nodeUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("criguard node "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o            nodeinstall.Options
		envFiles     stringList
		watch        bool
		hold         bool
		syncInterval time.Duration
		expect       string
	)
	fs.StringVar(&o.HostRoot, "host-root", "/", "where the node's / is mounted")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print every change and make none")
	fs.StringVar(&o.PolicyDir, "policy-dir", "", "directory of policy files (the mounted ConfigMap) to copy to "+unit.PolicyDir)
	fs.StringVar(&o.KeysDir, "keys-dir", "", "directory of public keys to copy to "+unit.KeysDir)
	fs.StringVar(&o.Binary, "binary", "", "criguard binary to install (default: this executable)")
	fs.StringVar(&o.KubeletConfig, "kubelet-config", "", "kubelet's configuration file on the host (default: kubelet's --config, else "+nodeinstall.DefaultKubeletConfig+")")
	fs.Var(&envFiles, "kubelet-env-file", "an EnvironmentFile with kubelet flags on the host (repeatable; default: kubelet's unit's and "+strings.Join(nodeinstall.DefaultKubeletEnvFiles, ", ")+")")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 2*time.Minute, "how long to wait for criguard and kubelet to become ready")
	fs.BoolVar(&watch, "watch", false, "install: keep running, copy policy changes to the host and re-install when kubelet stops pointing at criguard; sync: keep copying")
	fs.DurationVar(&syncInterval, "sync-interval", 30*time.Second, "with --watch or sync --watch: resync at least this often")
	fs.BoolVar(&o.Purge, "purge", false, "uninstall: also remove "+unit.ConfigDir)
	fs.BoolVar(&hold, "hold", false, "uninstall: keep running afterwards (for a DaemonSet)")
	fs.StringVar(&expect, "expect", "installed", "status: installed or uninstalled")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "criguard node %s: unexpected arguments %q\n", sub, fs.Args())
		return 2
	}
	if len(envFiles) > 0 {
		o.KubeletEnvFiles = envFiles
	}
	o.Log = stdout
	o.Services = unit.Systemctl{HostRoot: o.HostRoot}

	fail := func(err error) int {
		fmt.Fprintf(stderr, "criguard node %s: %v\n", sub, err)
		return 1
	}
	report := func(res nodeinstall.Result) {
		switch {
		case res.Unchanged():
			fmt.Fprintln(stdout, "unchanged")
		case o.DryRun:
			fmt.Fprintf(stdout, "dry run: %d changes listed above, none made\n", len(res.Changes))
		default:
			fmt.Fprintf(stdout, "done: %d changes\n", len(res.Changes))
		}
	}
	switch sub {
	case "install":
		res, err := nodeinstall.Install(ctx, o)
		if err != nil {
			return fail(err)
		}
		report(res)
		if watch && !o.DryRun {
			fmt.Fprintln(stdout, "watching the policy for changes and the node for drift")
			if err := nodeinstall.Watch(ctx, o, nodeinstall.WatchOptions{Interval: syncInterval, Repair: true}); err != nil {
				return fail(err)
			}
		}
	case "uninstall":
		res, err := nodeinstall.Uninstall(ctx, o)
		if err != nil {
			return fail(err)
		}
		report(res)
		if hold && !o.DryRun {
			<-ctx.Done()
		}
	case "sync":
		if watch {
			if err := nodeinstall.Watch(ctx, o, nodeinstall.WatchOptions{Interval: syncInterval}); err != nil {
				return fail(err)
			}
			return 0
		}
		res, err := nodeinstall.SyncPolicy(ctx, o)
		if err != nil {
			return fail(err)
		}
		report(res)
	case "status":
		var err error
		switch expect {
		case "installed":
			err = nodeinstall.Status(ctx, o)
		case "uninstalled":
			err = nodeinstall.Uninstalled(ctx, o)
		default:
			fmt.Fprintf(stderr, "criguard node status: --expect must be installed or uninstalled, not %q\n", expect)
			return 2
		}
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, expect)
	default:
		fmt.Fprintf(stderr, "criguard node: unknown subcommand %q\n\n%s", sub, nodeUsage)
		return 2
	}
	return 0
}
