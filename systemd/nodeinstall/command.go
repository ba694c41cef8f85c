package nodeinstall

import (
	"context"
	"fmt"
	"time"
)

// RunOptions say how a `criguard node` run goes on once its change is made:
// a DaemonSet pod keeps running after it.
type RunOptions struct {
	// Watch: after an install, keep the policy in step and repair drift;
	// for a sync, keep syncing instead of syncing once.
	Watch bool
	// Interval is how often a watch resyncs regardless of events.
	Interval time.Duration
	// Hold: after an uninstall, block until ctx ends (a pod that exits is
	// restarted).
	Hold bool
}

// RunInstall installs, logs a summary and, with Watch (not in a dry run),
// watches until ctx ends.
func RunInstall(ctx context.Context, o Options, ro RunOptions) error {
	res, err := Install(ctx, o)
	if err != nil {
		return err
	}
	o.logf("%s", res.summary(o.DryRun))
	if !ro.Watch || o.DryRun {
		return nil
	}
	o.logf("watching the policy for changes and the node for drift")
	return Watch(ctx, o, WatchOptions{Interval: ro.Interval, Repair: true})
}

// RunUninstall uninstalls, logs a summary and, with Hold (not in a dry run),
// waits until ctx ends.
func RunUninstall(ctx context.Context, o Options, ro RunOptions) error {
	res, err := Uninstall(ctx, o)
	if err != nil {
		return err
	}
	o.logf("%s", res.summary(o.DryRun))
	if ro.Hold && !o.DryRun {
		<-ctx.Done()
	}
	return nil
}

// RunSync syncs the policy once and logs a summary, or with Watch keeps
// syncing until ctx ends.
func RunSync(ctx context.Context, o Options, ro RunOptions) error {
	if ro.Watch {
		return Watch(ctx, o, WatchOptions{Interval: ro.Interval})
	}
	res, err := SyncPolicy(ctx, o)
	if err != nil {
		return err
	}
	o.logf("%s", res.summary(o.DryRun))
	return nil
}

// summary is the last line of a run: the operator sees at a glance whether
// the node changed.
func (r Result) summary(dryRun bool) string {
	switch {
	case r.Unchanged():
		return "unchanged"
	case dryRun:
		return fmt.Sprintf("dry run: %d changes listed above, none made", len(r.Changes))
	default:
		return fmt.Sprintf("done: %d changes", len(r.Changes))
	}
}
