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
  sync       copy the policy (and keys) directories to the host; the unit is not
             changed (install passes a trusted_root.json among the keys to serve)
  status     exit 0 when criguard is installed and serving (--expect uninstalled: when nothing is left)
`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// nodeFlags are the flags of `criguard node <subcommand>`.
type nodeFlags struct {
	o        nodeinstall.Options
	envFiles stringList
	run      nodeinstall.RunOptions
	expect   string
}

func newNodeFlags(sub string, stderr io.Writer) (*flag.FlagSet, *nodeFlags) {
	fs := flag.NewFlagSet("criguard node "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &nodeFlags{}
	o := &f.o
	fs.StringVar(&o.HostRoot, "host-root", "/", "where the node's / is mounted")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print every change and make none")
	fs.StringVar(&o.PolicyDir, "policy-dir", "", "directory of policy files (the mounted ConfigMap) to copy to "+unit.PolicyDir)
	fs.StringVar(&o.KeysDir, "keys-dir", "", "directory of public keys to copy to "+unit.KeysDir+
		"; a "+unit.TrustedRootFile+" there (or already on the host) is checked and passed to serve as --trusted-root")
	fs.StringVar(&o.Binary, "binary", "", "criguard binary to install (default: this executable)")
	fs.StringVar(&o.KubeletConfig, "kubelet-config", "", "kubelet's configuration file on the host (default: kubelet's --config, else "+nodeinstall.DefaultKubeletConfig+")")
	fs.Var(&f.envFiles, "kubelet-env-file", "an EnvironmentFile with kubelet flags on the host (repeatable; default: kubelet's unit's and "+strings.Join(nodeinstall.DefaultKubeletEnvFiles, ", ")+")")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 2*time.Minute, "how long to wait for criguard and kubelet to become ready")
	fs.BoolVar(&f.run.Watch, "watch", false, "install: keep running, copy policy changes to the host and re-install when kubelet stops pointing at criguard; sync: keep copying")
	fs.DurationVar(&f.run.Interval, "sync-interval", 30*time.Second, "with --watch or sync --watch: resync at least this often")
	fs.BoolVar(&o.Purge, "purge", false, "uninstall: also remove "+unit.ConfigDir)
	fs.BoolVar(&f.run.Hold, "hold", false, "uninstall: keep running afterwards (for a DaemonSet)")
	fs.StringVar(&f.expect, "expect", "installed", "status: installed or uninstalled")
	return fs, f
}

// options are the parsed flags as nodeinstall options: output to stdout,
// units through the host's systemctl.
func (f *nodeFlags) options(stdout io.Writer) nodeinstall.Options {
	o := f.o
	if len(f.envFiles) > 0 {
		o.KubeletEnvFiles = f.envFiles
	}
	o.Log = stdout
	o.Services = unit.Systemctl{HostRoot: o.HostRoot}
	return o
}

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, nodeUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	sub := args[0]
	fs, f := newNodeFlags(sub, stderr)
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
	o := f.options(stdout)
	var err error
	switch sub {
	case "install":
		err = nodeinstall.RunInstall(ctx, o, f.run)
	case "uninstall":
		err = nodeinstall.RunUninstall(ctx, o, f.run)
	case "sync":
		err = nodeinstall.RunSync(ctx, o, f.run)
	case "status":
		check := nodeinstall.Status
		switch f.expect {
		case "installed":
		case "uninstalled":
			check = nodeinstall.Uninstalled
		default:
			fmt.Fprintf(stderr, "criguard node status: --expect must be installed or uninstalled, not %q\n", f.expect)
			return 2
		}
		if err = check(ctx, o); err == nil {
			fmt.Fprintln(stdout, f.expect)
		}
	default:
		fmt.Fprintf(stderr, "criguard node: unknown subcommand %q\n\n%s", sub, nodeUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "criguard node %s: %v\n", sub, err)
		return 1
	}
	return 0
}
