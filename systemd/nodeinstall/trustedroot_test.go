package nodeinstall

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/criguard/criguard/systemd/unit"
)

const testKey = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"

// privateRoot is a real trusted root (the private Sigstore stack the
// fixtures in testdata/sigstore were signed with).
func privateRoot(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../testdata/sigstore/trusted_root.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitFor is the unit the installer must write, with or without the root.
func unitFor(t *testing.T, withRoot bool) string {
	t.Helper()
	var c unit.Config
	if withRoot {
		c.TrustedRoot = unit.TrustedRootPath
	}
	b, err := unit.Render(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hostUnitExec is the installed unit's ExecStart.
func hostUnitExec(t *testing.T, root string) string {
	t.Helper()
	for _, l := range strings.Split(readHost(t, root, unit.UnitPath), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return v
		}
	}
	t.Fatal("installed unit has no ExecStart")
	return ""
}

// A trusted root in the keys ConfigMap reaches serve's ExecStart (as the
// host path it is copied to); dropping it from the ConfigMap drops the flag;
// uninstall leaves nothing behind.
func TestInstallPassesTrustedRoot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[0])
	before := snapshot(t, f.root)
	tr := privateRoot(t)
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey, unit.TrustedRootFile: tr})

	dry := f.opts()
	dry.DryRun = true
	if _, err := Install(ctx, dry); err != nil {
		t.Fatal(err)
	}
	if want := "would write " + unit.UnitPath + " (systemd unit, serve --trusted-root " + unit.TrustedRootPath; !strings.Contains(f.log.String(), want) {
		t.Errorf("dry run does not say the unit passes the trusted root (%q):\n%s", want, f.log.String())
	}

	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatalf("install: %v\n%s", err, f.log.String())
	}
	if got := readHost(t, f.root, unit.UnitPath); got != unitFor(t, true) {
		t.Errorf("unit:\n%s\nwant the unit with --trusted-root", got)
	}
	if exec := hostUnitExec(t, f.root); !strings.HasSuffix(exec, " --policy "+unit.PolicyDir+" --metrics-address "+unit.MetricsAddress+" --trusted-root "+unit.TrustedRootPath) {
		t.Errorf("ExecStart = %q", exec)
	}
	if got := readHost(t, f.root, unit.TrustedRootPath); got != tr {
		t.Error("the trusted root on the host differs from the ConfigMap's")
	}
	if err := Drift(f.opts()); err != nil {
		t.Errorf("drift right after install: %v", err)
	}
	f.svc.Calls()
	if res, err := Install(ctx, f.opts()); err != nil || !res.Unchanged() {
		t.Errorf("second install: %v, changes %q", err, res.Changes)
	}

	// The root gone from the ConfigMap: the unit goes back to the embedded
	// root and criguard restarts on it.
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey})
	if err := Drift(f.opts()); err != nil {
		t.Errorf("drift before the keys are synced: %v", err)
	}
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f.root, unit.UnitPath); got != string(unit.Unit()) {
		t.Errorf("unit after the root left the ConfigMap:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(f.root, unit.TrustedRootPath)); !os.IsNotExist(err) {
		t.Errorf("trusted root still on the host: %v", err)
	}
	if got, want := f.svc.Calls(), []string{"daemon-reload", "restart criguard.service"}; !reflect.DeepEqual(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}

	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey, unit.TrustedRootFile: tr})
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	f.purgeRestores(t, before)
}

// Without a keys ConfigMap the host's own keys decide: a trusted root placed
// there by hand is passed too.
func TestInstallPassesHostTrustedRoot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[1])
	configMapDir(t, f.keysDir, map[string]string{})
	writeFile(t, filepath.Join(f.root, unit.TrustedRootPath), privateRoot(t))
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f.root, unit.UnitPath); got != unitFor(t, true) {
		t.Errorf("unit:\n%s\nwant the unit with --trusted-root", got)
	}
	if err := Drift(f.opts()); err != nil {
		t.Errorf("drift: %v", err)
	}
	// Removed by hand: the unit no longer matches the node.
	if err := os.Remove(filepath.Join(f.root, unit.TrustedRootPath)); err != nil {
		t.Fatal(err)
	}
	if err := Drift(f.opts()); err == nil || !strings.Contains(err.Error(), unit.UnitPath) {
		t.Errorf("drift with the root gone: %v", err)
	}
}

// A sync refuses a broken trusted root and leaves the host's keys and policy
// as they were: the running criguard keeps its root, and its next start works.
func TestSyncRefusesBadTrustedRoot(t *testing.T) {
	f := newFixture(t, nodes[0])
	tr := privateRoot(t)
	configMapDir(t, f.keysDir, map[string]string{unit.TrustedRootFile: tr})
	if _, err := Install(context.Background(), f.opts()); err != nil {
		t.Fatal(err)
	}
	configMapDir(t, f.keysDir, map[string]string{unit.TrustedRootFile: "{"})
	configMapDir(t, f.policyDir, map[string]string{"policy.yaml": "changed"})
	before := snapshot(t, f.root)
	_, err := SyncPolicy(context.Background(), f.opts())
	if err == nil || !strings.Contains(err.Error(), filepath.Join(f.keysDir, unit.TrustedRootFile)) {
		t.Fatalf("sync of a broken root: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); len(d) > 0 {
		t.Errorf("refused sync changed %v", d)
	}
}

// A plain sync (no watch repairing the unit) never deletes the trusted root
// the installed unit passes to serve, and says when one it copies is unused.
func TestSyncKeepsTheUnitsTrustedRoot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nodes[0])
	tr := privateRoot(t)
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey, unit.TrustedRootFile: tr})
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey})
	before := snapshot(t, f.root)
	if _, err := SyncPolicy(ctx, f.opts()); err == nil || !strings.Contains(err.Error(), "run `criguard node install`") {
		t.Fatalf("sync deleting the unit's trusted root: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); len(d) > 0 {
		t.Errorf("refused sync changed %v", d)
	}
	// Install changes both; a sync then adding the root leaves the unit
	// alone and says so.
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey, unit.TrustedRootFile: tr})
	f.log.Reset()
	if _, err := SyncPolicy(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f.root, unit.TrustedRootPath); got != tr {
		t.Error("trusted root not copied")
	}
	if got := readHost(t, f.root, unit.UnitPath); got != unitFor(t, false) {
		t.Error("sync changed the unit")
	}
	if !strings.Contains(f.log.String(), "does not use it until `criguard node install`") {
		t.Errorf("sync log: %s", f.log.String())
	}
	if _, err := Install(ctx, f.opts()); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f.root, unit.UnitPath); got != unitFor(t, true) {
		t.Error("install after the sync did not pass the root")
	}
}

// The installer's watch keeps the unit in step with the keys: a trusted root
// added to or removed from the ConfigMap is synced, and the unit is rewritten
// and criguard restarted at once (the hour-long interval leaves only the
// sync's own change to trigger it).
func TestWatchFollowsTrustedRoot(t *testing.T) {
	f := newFixture(t, nodes[0])
	o := f.opts()
	o.Log = nil
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	f.svc.Calls()
	startWatch(t, o, WatchOptions{Interval: time.Hour, Repair: true})
	waitUnit := func(withRoot bool) {
		t.Helper()
		want := unitFor(t, withRoot)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if b, err := os.ReadFile(filepath.Join(f.root, unit.UnitPath)); err == nil && string(b) == want {
				if _, err := os.Stat(filepath.Join(f.root, unit.TrustedRootPath)); err == nil == withRoot {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("the unit never became the one with trusted root %v:\n%s", withRoot, readHost(t, f.root, unit.UnitPath))
	}
	waitRestart := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var calls []string
		for time.Now().Before(deadline) {
			calls = append(calls, f.svc.Calls()...)
			if len(calls) > 0 && calls[len(calls)-1] == "restart criguard.service" {
				if !reflect.DeepEqual(calls, []string{"daemon-reload", "restart criguard.service"}) {
					t.Errorf("calls %q", calls)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("criguard not restarted on the new unit: calls %q", calls)
	}
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey, unit.TrustedRootFile: privateRoot(t)})
	waitUnit(true)
	waitRestart()
	configMapDir(t, f.keysDir, map[string]string{"team.pub": testKey})
	waitUnit(false)
	waitRestart()
}

// An upgrade whose new criguard never serves goes back to the previous
// binary and unit, and to the trusted root that unit passes to serve: one the
// upgrade dropped from the keys or replaced is put back byte for byte, so the
// previous criguard starts again. One the upgrade added stays, unused.
func TestBrokenUpgradeKeepsPreviousTrustedRoot(t *testing.T) {
	r1 := privateRoot(t)
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(r1)); err != nil {
		t.Fatal(err)
	}
	r2 := compact.String() // the same root, other bytes: a changed root
	if r2 == r1 {
		t.Fatal("the compacted root must differ from the fixture")
	}
	for _, tc := range []struct {
		name          string
		before, after map[string]string // keys ConfigMap
		// wantRoot is the host's trusted root after the rollback ("" none).
		wantRoot string
	}{
		{"root dropped", map[string]string{"team.pub": testKey, unit.TrustedRootFile: r1}, map[string]string{"team.pub": testKey}, r1},
		{"root changed", map[string]string{"team.pub": testKey, unit.TrustedRootFile: r1}, map[string]string{"team.pub": testKey, unit.TrustedRootFile: r2}, r1},
		{"root added", map[string]string{"team.pub": testKey}, map[string]string{"team.pub": testKey, unit.TrustedRootFile: r1}, r1},
		{"root kept", map[string]string{unit.TrustedRootFile: r1}, map[string]string{"team.pub": testKey, unit.TrustedRootFile: r1}, r1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, nodes[0])
			configMapDir(t, f.keysDir, tc.before)
			if _, err := Install(ctx, f.opts()); err != nil {
				t.Fatal(err)
			}
			oldUnit := readHost(t, f.root, unit.UnitPath)
			f.ready.badBinary = "\x7fELF criguard broken"
			writeFile(t, f.binary, f.ready.badBinary)
			configMapDir(t, f.keysDir, tc.after)
			o := f.opts()
			o.ReadyTimeout = 300 * time.Millisecond
			_, err := Install(ctx, o)
			if err == nil || !strings.Contains(err.Error(), "previous criguard was restored and serves again") {
				t.Fatalf("broken upgrade: %v\n%s", err, f.log.String())
			}
			if got := readHost(t, f.root, unit.UnitPath); got != oldUnit {
				t.Errorf("unit after the rollback:\n%s\nwant the previous one:\n%s", got, oldUnit)
			}
			if got := readHost(t, f.root, unit.BinaryPath); got != "\x7fELF criguard v1" {
				t.Errorf("binary after the rollback = %q", got)
			}
			if got := readHost(t, f.root, unit.TrustedRootPath); got != tc.wantRoot {
				t.Errorf("trusted root after the rollback: %d bytes, want the previous %d", len(got), len(tc.wantRoot))
			}
			if err := f.ready.serveStarts(); err != nil {
				t.Errorf("the previous criguard would not start: %v", err)
			}
		})
	}
}
