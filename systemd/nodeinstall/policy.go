package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/criguard/criguard/systemd/unit"
)

// maxSourceFiles bounds how many files a policy or keys directory may hold.
const maxSourceFiles = 256

// readSourceDir reads the regular files of a mounted ConfigMap directory. A
// ConfigMap volume shows each key as a symlink through ..data (swapped
// atomically on update); names starting with "." are its machinery and are
// skipped. dir "" reads nothing.
func readSourceDir(dir, what string) (map[string][]byte, error) {
	if dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s directory %s: %w", what, dir, err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p) // follows the ConfigMap's symlinks
		if err != nil {
			return nil, fmt.Errorf("read %s file %s: %w", what, p, err)
		}
		if st.IsDir() {
			continue
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("read %s file %s: not a regular file", what, p)
		}
		if len(files) >= maxSourceFiles {
			return nil, fmt.Errorf("%s directory %s has more than %d files", what, dir, maxSourceFiles)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("read %s file %s: %w", what, p, err)
		}
		b, err := io.ReadAll(io.LimitReader(f, maxHostFile+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s file %s: %w", what, p, err)
		}
		if len(b) > maxHostFile {
			return nil, fmt.Errorf("%s file %s is larger than %d bytes", what, p, maxHostFile)
		}
		files[name] = b
	}
	return files, nil
}

// syncDir makes host directory dst hold exactly files (when managed): new and
// changed files are written atomically first, then files no longer in the
// source are removed. Unmanaged (no source given) leaves dst alone.
func syncDir(h *host, files map[string][]byte, dst string, managed bool) error {
	if !managed {
		return nil
	}
	if err := h.mkdirAll(dst, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := h.ensureFile(path.Join(dst, n), files[n], 0o644, "from "+path.Base(dst)+" ConfigMap"); err != nil {
			return err
		}
	}
	existing, err := h.readDirFiles(dst)
	if err != nil {
		return err
	}
	for _, n := range existing {
		if _, ok := files[n]; !ok {
			if err := h.remove(path.Join(dst, n), "no longer in the ConfigMap"); err != nil {
				return err
			}
		}
	}
	return nil
}

// SyncPolicy copies the policy (and keys) directories to the host once.
// criguard notices the new files itself and reloads; an invalid policy is
// refused by criguard and the last good one stays in force. The unit is not
// changed: a sync that would delete the trusted root the installed unit passes
// to serve is refused (criguard could not start again); `criguard node
// install` changes both.
func SyncPolicy(ctx context.Context, o Options) (Result, error) {
	return syncOnce(ctx, o, false)
}

// syncOnce syncs; unitFollows says the caller brings the unit in step right
// after (the installer's watch repairs it), so the trusted root may go.
func syncOnce(ctx context.Context, o Options, unitFollows bool) (Result, error) {
	return onHost(ctx, &o, func(_ context.Context, o *Options, h *host) error {
		return syncPolicy(o, h, unitFollows)
	})
}

func syncPolicy(o *Options, h *host, unitFollows bool) error {
	policy, err := readSourceDir(o.PolicyDir, "policy")
	if err != nil {
		return err
	}
	if o.PolicyDir != "" && len(policy) == 0 {
		// An empty source is a broken mount, not an instruction to delete the
		// node's policy.
		return fmt.Errorf("no policy files in %s; leaving %s on the host as it is", o.PolicyDir, unit.PolicyDir)
	}
	keys, err := readSourceDir(o.KeysDir, "keys")
	if err != nil {
		return err
	}
	// A trusted root serve cannot load would be kept out of a running serve
	// (it keeps the last good one) but stop it at its next start.
	hasRoot, err := checkTrustedRoot(keys, filepath.Join(o.KeysDir, unit.TrustedRootFile))
	if err != nil {
		return err
	}
	if len(keys) > 0 && !unitFollows {
		if err := checkUnitRoot(o, h, hasRoot); err != nil {
			return err
		}
	}
	// The keys ConfigMap is optional: absent (an empty mount), the host's keys
	// are left alone rather than deleted from under a policy that names them.
	if err := syncDir(h, keys, unit.KeysDir, len(keys) > 0); err != nil {
		return err
	}
	return syncDir(h, policy, unit.PolicyDir, o.PolicyDir != "")
}

// checkUnitRoot refuses a sync that would delete the trusted root the
// installed unit passes to serve, and says when one copied is not used yet.
func checkUnitRoot(o *Options, h *host, hasRoot bool) error {
	u, ok, err := h.readFile(unit.UnitPath, maxHostFile)
	if err != nil || !ok {
		return err
	}
	passed := unit.TrustedRootOf(u) == unit.TrustedRootPath
	switch {
	case passed && !hasRoot:
		return fmt.Errorf("the installed unit passes %s to criguard serve (--trusted-root) and %s no longer holds %s: deleting it would keep criguard from starting again; run `criguard node install`, which rewrites the unit, instead of sync",
			unit.TrustedRootPath, o.KeysDir, unit.TrustedRootFile)
	case !passed && hasRoot:
		if onHost, err := h.exists(unit.TrustedRootPath); err != nil || onHost {
			return err
		}
		o.logf("%s: criguard serve does not use it until `criguard node install` passes it in the unit", unit.TrustedRootPath)
	}
	return nil
}

// WatchOptions configure Watch.
type WatchOptions struct {
	// Interval is how often the policy is resynced (and, with Repair, the node
	// checked) regardless of events; default 30s.
	Interval time.Duration
	// Repair re-installs when kubelet no longer points at criguard, or the
	// unit or binary is gone (kubeadm upgrade rewrites kubeadm-flags.env, an
	// operator restored a file by hand): a node stays guarded while the
	// installer runs. Uninstall by deleting the installer first.
	Repair bool
}

// Watch keeps the host's policy in step with the mounted ConfigMap until ctx
// ends: on every change fsnotify reports in the source directories, and every
// interval regardless (a missed event costs at most one interval). Errors are
// logged and retried; only a failure to watch at all is returned.
func Watch(ctx context.Context, o Options, wo WatchOptions) error {
	interval := wo.Interval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy directories: %w", err)
	}
	defer w.Close()
	for _, d := range []string{o.PolicyDir, o.KeysDir} {
		if d == "" {
			continue
		}
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last, lastRepair string
	tick := false
	for {
		res, err := syncOnce(ctx, o, wo.Repair)
		switch {
		case err != nil:
			msg := err.Error()
			if msg != last {
				o.logf("policy sync failed (retrying): %v", err)
			}
			last = msg
		case !res.Unchanged():
			o.logf("policy synced to the host (%d changes)", len(res.Changes))
			last = ""
		default:
			last = ""
		}
		// A sync that changed the host may have added or removed the trusted
		// root the unit names: check the unit at once, not at the next tick.
		if wo.Repair && (tick || (err == nil && !res.Unchanged())) {
			msg := ""
			if drift := Drift(o); drift != nil {
				o.logf("node drifted from the install (%v): installing again", drift)
				if _, err := Install(ctx, o); err != nil {
					msg = err.Error()
					if msg != lastRepair {
						o.logf("repair failed (retrying every %s): %v", interval, err)
					}
				} else {
					o.logf("node repaired")
				}
			}
			lastRepair = msg
		}
		tick = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			tick = true
		case _, ok := <-w.Events:
			if !ok {
				return errors.New("policy watcher closed")
			}
			// A ConfigMap update swaps ..data and removes the old directory in
			// a burst of events: let it settle.
			settle(ctx, w.Events, 200*time.Millisecond)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("policy watcher closed")
			}
			o.logf("policy watch: %v", err)
		}
	}
}

// Drift reports why the node no longer looks installed (nil when it does):
// the unit or binary is missing, the unit is not the one for the host's keys
// (with or without their trusted root), or a kubelet file does not point at
// criguard. It reads files only.
func Drift(o Options) error {
	h, err := openHost(o.HostRoot, true, func(string, ...any) {})
	if err != nil {
		return err
	}
	defer h.Close()
	onDisk, ok, err := h.readFile(unit.UnitPath, maxHostFile)
	if err != nil {
		return err
	}
	want, err := planUnit(&o, h, nil)
	if err != nil {
		return err
	}
	if !ok || string(onDisk) != string(want.bytes) {
		return fmt.Errorf("%s missing or not the %s", unit.UnitPath, want.what)
	}
	if ok, err := h.exists(unit.BinaryPath); err != nil || !ok {
		return fmt.Errorf("%s missing (%v)", unit.BinaryPath, err)
	}
	f, err := unguardedFile(h, &o)
	if err != nil {
		return err
	}
	if f != "" {
		return fmt.Errorf("%s does not point kubelet at criguard", f)
	}
	return nil
}

// unguardedFile names the first kubelet file that does not point at
// criguard, "" when every one does. It reads files only.
func unguardedFile(h *host, o *Options) (string, error) {
	lay, err := discover(h, o.KubeletConfig, o.KubeletEnvFiles)
	if err != nil {
		return "", err
	}
	edits, err := planInstallEdits(h, lay)
	if err != nil || len(edits) == 0 {
		return "", err
	}
	return edits[0].path, nil
}

// settle drains events until none arrives for quiet.
func settle(ctx context.Context, ev <-chan fsnotify.Event, quiet time.Duration) {
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-ev:
			if !t.Stop() {
				<-t.C
			}
			t.Reset(quiet)
		}
	}
}
