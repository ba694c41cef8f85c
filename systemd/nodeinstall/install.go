// Package nodeinstall installs criguard on a node's host from inside a
// privileged pod (or on the host itself): it copies the binary, the systemd
// unit and the policy, points kubelet's runtime endpoint at criguard's socket,
// restarts what needs restarting and waits until kubelet works through
// criguard. Uninstall reverses it, kubelet first.
//
// Every host edit is atomic (temporary file in the same directory, fsync,
// rename, fsync of the directory) and confined below the host root. The
// original bytes of every kubelet file are kept under /var/lib/criguard until
// uninstall. Install and uninstall are idempotent; a dry run reports every
// change and touches nothing.
package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/criguard/criguard/systemd/unit"
)

// ServiceManager starts and stops units on the host. unit.Systemctl is the
// real one; tests and the e2e harness supply their own.
type ServiceManager interface {
	DaemonReload(ctx context.Context) error
	Enable(ctx context.Context, unit string) error
	Disable(ctx context.Context, unit string) error
	Start(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
	IsActive(ctx context.Context, unit string) (bool, error)
}

// Readiness tells when criguard serves CRI and when kubelet is healthy.
// Each call is one attempt; the installer retries until its timeout.
type Readiness interface {
	// CriguardReady succeeds when a CRI Version and Status call through
	// criguard's socket succeed with the runtime ready.
	CriguardReady(ctx context.Context) error
	// KubeletReady succeeds when kubelet reports healthy.
	KubeletReady(ctx context.Context) error
}

// Options configure an install or uninstall.
type Options struct {
	// HostRoot is where the node's / is mounted ("/" on the host itself).
	HostRoot string
	// Binary is the criguard binary to copy (default: the running executable).
	Binary string
	// PolicyDir is a directory of policy files (the mounted ConfigMap) copied
	// to /etc/criguard/policy; files there that it lacks are removed. Empty:
	// the host's policy is left as it is (and must exist).
	PolicyDir string
	// KeysDir, when set, is copied to /etc/criguard/keys the same way, except
	// that an empty KeysDir (the optional keys ConfigMap does not exist) leaves
	// the host's keys alone. When the host's keys then hold a
	// trusted_root.json, the unit passes it to serve as --trusted-root.
	KeysDir string
	// KubeletConfig overrides the KubeletConfiguration path on the host
	// (default: kubelet's --config from its unit, else /var/lib/kubelet/config.yaml).
	KubeletConfig string
	// KubeletEnvFiles overrides the EnvironmentFiles searched for endpoint flags.
	KubeletEnvFiles []string
	// DryRun reports every change and makes none.
	DryRun bool
	// Purge (uninstall) also removes /etc/criguard (policy and keys).
	Purge bool
	// Services controls units on the host.
	Services ServiceManager
	// Ready checks criguard and kubelet (default: CRI through the socket under
	// HostRoot, and kubelet's healthz from its configuration).
	Ready Readiness
	// ReadyTimeout bounds each wait for readiness (default 2 minutes).
	ReadyTimeout time.Duration
	// Log receives one line per change and step (default: discarded).
	Log io.Writer
}

// Result lists what a run changed (or would change, in a dry run).
type Result struct {
	Changes []string
}

// Unchanged reports whether the run changed nothing.
func (r Result) Unchanged() bool { return len(r.Changes) == 0 }

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

func (o *Options) timeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return 2 * time.Minute
}

// readiness is Ready, else the default check of the host's criguard and kubelet.
func (o *Options) readiness() Readiness {
	if o.Ready != nil {
		return o.Ready
	}
	return &DefaultReadiness{HostRoot: o.HostRoot, KubeletConfig: o.KubeletConfig}
}

// useLayout tells the default readiness check which configuration kubelet
// really reads (its healthz settings), once discovery has found it.
func (o *Options) useLayout(lay layout) {
	if d, ok := o.Ready.(*DefaultReadiness); ok && d.KubeletConfig == "" {
		d.KubeletConfig = lay.Config
	}
}

// Install puts criguard on the host and points kubelet at it. When kubelet
// does not become healthy through criguard within the timeout, kubelet's
// files are restored from the backup, kubelet is restarted on containerd
// again and an error is returned: the node keeps running, unguarded as before.
func Install(ctx context.Context, o Options) (Result, error) {
	return locked(ctx, o, install)
}

// locked checks the options an install or uninstall needs and runs fn under
// the installer lock.
func locked(ctx context.Context, o Options, fn func(context.Context, *Options, *host) error) (Result, error) {
	if o.Services == nil {
		return Result{}, errors.New("nodeinstall: no ServiceManager")
	}
	o.Ready = o.readiness()
	return onHost(ctx, &o, fn)
}

// onHost opens the host root, holds the installer lock (one installer per
// node at a time) while fn runs, and reports what fn changed.
func onHost(ctx context.Context, o *Options, fn func(context.Context, *Options, *host) error) (Result, error) {
	h, err := openHost(o.HostRoot, o.DryRun, o.logf)
	if err != nil {
		return Result{}, err
	}
	defer h.Close()
	unlock, err := h.lock(ctx)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	err = fn(ctx, o, h)
	return Result{Changes: h.changed}, err
}

// install runs the steps in order and stops at the first failure: plan
// (reads only), criguard's files, criguard's unit, then kubelet.
func install(ctx context.Context, o *Options, h *host) error {
	p, err := planInstall(o, h)
	if err != nil {
		return err
	}
	u, err := installFiles(o, h, p)
	if err != nil {
		return err
	}
	if err := startCriguard(ctx, o, h, u); err != nil {
		return err
	}
	return repointKubelet(ctx, o, h, p.st, p.edits)
}

// installPlan is what an install read and checked before changing anything.
type installPlan struct {
	st           *installState
	edits        []fileEdit
	bin          []byte
	policy, keys map[string][]byte
	unit         hostUnit
}

// readInstall finds kubelet's files and the installer's record of them, and
// tells the default readiness check which configuration kubelet reads.
func readInstall(o *Options, h *host) (layout, *installState, error) {
	lay, err := discover(h, o.KubeletConfig, o.KubeletEnvFiles)
	if err != nil {
		return layout{}, nil, err
	}
	o.useLayout(lay)
	st, err := loadState(h)
	return lay, st, err
}

// planInstall reads and checks everything first, so a refusal changes nothing.
func planInstall(o *Options, h *host) (*installPlan, error) {
	lay, st, err := readInstall(o, h)
	if err != nil {
		return nil, err
	}
	edits, err := planInstallEdits(h, lay)
	if err != nil {
		return nil, err
	}
	bin, err := readBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	policy, err := readSourceDir(o.PolicyDir, "policy")
	if err != nil {
		return nil, err
	}
	keys, err := readSourceDir(o.KeysDir, "keys")
	if err != nil {
		return nil, err
	}
	if err := requirePolicy(o, h, policy); err != nil {
		return nil, err
	}
	u, err := planUnit(o, h, keys)
	if err != nil {
		return nil, err
	}
	return &installPlan{st: st, edits: edits, bin: bin, policy: policy, keys: keys, unit: u}, nil
}

// requirePolicy refuses an install that would leave criguard without a
// policy: criguard refuses to start without one.
func requirePolicy(o *Options, h *host, policy map[string][]byte) error {
	if o.PolicyDir != "" {
		if len(policy) == 0 {
			return fmt.Errorf("no policy files in %s (is the policy ConfigMap mounted?); criguard refuses to start without a policy", o.PolicyDir)
		}
		return nil
	}
	names, err := h.readDirFiles(unit.PolicyDir)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("no policy: %s on the host is empty and no --policy-dir was given; criguard refuses to start without a policy", unit.PolicyDir)
	}
	return nil
}

// criguardUpdate is what writing criguard's own files did: which changed,
// and the bytes they had before, to go back to if the new version does not
// serve. The trusted root is among them because the previous unit may pass it
// to serve, and the keys sync may delete or replace it.
type criguardUpdate struct {
	oldBin, oldUnit, oldRoot []byte
	hadBin, hadUnit, hadRoot bool
	binChanged, unitChanged  bool
}

// installFiles writes the files criguard runs from: binary, unit, keys, policy.
func installFiles(o *Options, h *host, p *installPlan) (criguardUpdate, error) {
	for _, d := range []string{unit.StateDir, unit.ConfigDir} {
		if err := h.mkdirAll(d, 0o755); err != nil {
			return criguardUpdate{}, err
		}
	}
	u, err := readPrevious(h)
	if err != nil {
		return u, err
	}
	if u.binChanged, err = h.ensureFile(unit.BinaryPath, p.bin, 0o755, "criguard binary"); err != nil {
		return u, err
	}
	// Keys first: a new policy may name a new key, a new unit a trusted root.
	if err := syncDir(h, p.keys, unit.KeysDir, len(p.keys) > 0); err != nil {
		return u, err
	}
	if u.unitChanged, err = h.ensureFile(unit.UnitPath, p.unit.bytes, 0o644, p.unit.what); err != nil {
		return u, err
	}
	return u, syncDir(h, p.policy, unit.PolicyDir, o.PolicyDir != "")
}

// readPrevious reads the binary, unit and trusted root an upgrade goes back
// to when the new version does not serve.
func readPrevious(h *host) (criguardUpdate, error) {
	var u criguardUpdate
	var err error
	if u.oldBin, u.hadBin, err = h.readFile(unit.BinaryPath, maxBinary); err != nil {
		return u, err
	}
	if u.oldUnit, u.hadUnit, err = h.readFile(unit.UnitPath, maxHostFile); err != nil {
		return u, err
	}
	u.oldRoot, u.hadRoot, err = h.readFile(unit.TrustedRootPath, maxHostFile)
	return u, err
}

// startCriguard enables the unit (kubelet.service wants it), runs it and
// waits until criguard serves CRI, before kubelet's files are touched. An
// upgrade that does not serve goes back to the previous version.
func startCriguard(ctx context.Context, o *Options, h *host, u criguardUpdate) error {
	if u.unitChanged {
		if err := service(o, h, "systemctl daemon-reload", func() error { return o.Services.DaemonReload(ctx) }); err != nil {
			return err
		}
	}
	enabled, err := h.exists(unit.WantsLink)
	if err != nil {
		return err
	}
	if !enabled {
		if err := service(o, h, "systemctl enable "+unit.UnitName, func() error { return o.Services.Enable(ctx, unit.UnitName) }); err != nil {
			return err
		}
	}
	upgrade, err := runCriguard(ctx, o, h, u)
	if err != nil || o.DryRun {
		return err
	}
	if err := wait(ctx, o.timeout(), o.Ready.CriguardReady); err != nil {
		err = fmt.Errorf("criguard did not serve CRI on %s within %s: %w (see `journalctl -u %s` on the node); kubelet's files were not changed",
			unit.SocketPath, o.timeout(), err, unit.UnitName)
		if upgrade && u.hadBin && u.hadUnit {
			return downgrade(ctx, o, h, u, err)
		}
		return err
	}
	return nil
}

// runCriguard starts the unit when it is not running, restarts it when its
// binary or unit changed, and reports whether that restart was an upgrade.
func runCriguard(ctx context.Context, o *Options, h *host, u criguardUpdate) (upgrade bool, err error) {
	active, err := o.Services.IsActive(ctx, unit.UnitName)
	if err != nil {
		return false, fmt.Errorf("ask systemd whether %s runs: %w", unit.UnitName, err)
	}
	switch {
	case !active:
		return false, service(o, h, "systemctl start "+unit.UnitName, func() error { return o.Services.Start(ctx, unit.UnitName) })
	case u.binChanged || u.unitChanged:
		// Upgrade: only criguard restarts; kubelet reconnects by itself.
		return true, service(o, h, "systemctl restart "+unit.UnitName, func() error { return o.Services.Restart(ctx, unit.UnitName) })
	}
	return false, nil
}

// repointKubelet backs up kubelet's files, points them at criguard, restarts
// kubelet and waits until it is healthy through criguard; a failure after the
// first edit restores the files. A restart still pending from an interrupted
// run (files already edited, kubelet never restarted) is done now, or kubelet
// would keep running on containerd.
func repointKubelet(ctx context.Context, o *Options, h *host, st *installState, edits []fileEdit) error {
	if len(edits) == 0 && !st.KubeletRestartPending {
		return nil
	}
	if err := backupKubelet(h, st, edits); err != nil {
		return err
	}
	for _, e := range edits {
		if _, err := h.ensureFile(e.path, e.new, 0, e.describe()); err != nil {
			return rollback(ctx, o, h, st, edits, err)
		}
	}
	if err := service(o, h, "systemctl restart "+unit.KubeletUnit, func() error { return o.Services.Restart(ctx, unit.KubeletUnit) }); err != nil {
		return rollback(ctx, o, h, st, edits, err)
	}
	if o.DryRun {
		return nil
	}
	if err := wait(ctx, o.timeout(), func(ctx context.Context) error {
		if err := o.Ready.KubeletReady(ctx); err != nil {
			return err
		}
		return o.Ready.CriguardReady(ctx)
	}); err != nil {
		return rollback(ctx, o, h, st, edits, fmt.Errorf("kubelet did not become healthy through criguard within %s: %w", o.timeout(), err))
	}
	st.KubeletRestartPending = false
	return saveState(h, st)
}

// backupKubelet keeps the original bytes of every file about to be edited
// and records the edits, with a kubelet restart pending, before the first
// edit: an interrupted run can then always be finished or undone.
func backupKubelet(h *host, st *installState, edits []fileEdit) error {
	if len(edits) > 0 {
		if err := h.mkdirAll(backupDir, 0o700); err != nil {
			return err
		}
	}
	for _, e := range edits {
		if _, err := h.ensureFile(e.backup, e.old, 0o600, "original of "+e.path); err != nil {
			return err
		}
		st.put(editedFile{Path: e.path, Kind: e.kind, Backup: e.backup, InstalledSHA256: sha256hex(e.new), Original: e.found})
	}
	st.KubeletRestartPending = true
	return saveState(h, st)
}

// downgrade puts the previous binary, unit and trusted root back after an
// upgrade that did not serve, so a kubelet already pointed at criguard keeps
// working. A root the upgrade added stays: the previous unit does not name it.
func downgrade(ctx context.Context, o *Options, h *host, u criguardUpdate, cause error) error {
	o.logf("upgrade failed: %v; going back to the previous criguard", cause)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout()+time.Minute)
	defer cancel()
	var errs []error
	if u.hadRoot {
		if _, err := h.ensureFile(unit.TrustedRootPath, u.oldRoot, 0o644, "previous trusted root (upgrade rolled back)"); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := h.ensureFile(unit.BinaryPath, u.oldBin, 0o755, "previous criguard binary (upgrade rolled back)"); err != nil {
		errs = append(errs, err)
	}
	if _, err := h.ensureFile(unit.UnitPath, u.oldUnit, 0o644, "previous systemd unit (upgrade rolled back)"); err != nil {
		errs = append(errs, err)
	}
	if u.unitChanged {
		errs = append(errs, service(o, h, "systemctl daemon-reload", func() error { return o.Services.DaemonReload(ctx) }))
	}
	errs = append(errs, service(o, h, "systemctl restart "+unit.UnitName, func() error { return o.Services.Restart(ctx, unit.UnitName) }))
	if err := errors.Join(errs...); err == nil {
		err = wait(ctx, o.timeout(), o.Ready.CriguardReady)
		if err == nil {
			return fmt.Errorf("%w; the previous criguard was restored and serves again", cause)
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w; going back to the previous criguard failed too: %v", cause, errors.Join(errs...))
}

// rollback restores kubelet's files from the bytes read before the edit and
// restarts kubelet, so a failed install leaves kubelet on containerd.
func rollback(ctx context.Context, o *Options, h *host, st *installState, edits []fileEdit, cause error) error {
	o.logf("install failed: %v; restoring kubelet's files", cause)
	// The rollback must finish even when the install was cancelled (the pod
	// got SIGTERM): a kubelet left pointing at a half-installed criguard is
	// the one outcome worse than either state.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var errs []error
	for _, e := range edits {
		if _, err := h.ensureFile(e.path, e.old, 0, "restore original (rollback)"); err != nil {
			errs = append(errs, err)
			continue
		}
		st.drop(e.path)
	}
	if len(errs) == 0 {
		errs = append(errs, saveState(h, st))
		err := service(o, h, "systemctl restart "+unit.KubeletUnit, func() error { return o.Services.Restart(ctx, unit.KubeletUnit) })
		errs = append(errs, err)
		if err == nil {
			st.KubeletRestartPending = false
			errs = append(errs, saveState(h, st))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w; rollback also failed: %v (run `criguard node uninstall` to restore kubelet from %s)", cause, err, backupDir)
	}
	return fmt.Errorf("%w; kubelet's files were restored and kubelet restarted on containerd", cause)
}

// fileEdit is one planned kubelet file edit.
type fileEdit struct {
	path, backup string
	kind         string // "env" or "config"
	added        bool   // containerRuntimeEndpoint appended to a configuration
	old, new     []byte
	found        map[string]string
}

// describe names the settings an edit changes, old -> new.
func (e fileEdit) describe() string {
	keys := make([]string, 0, len(e.found))
	for k := range e.found {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		old := e.found[k]
		switch {
		case isCriguard(old):
			continue
		case old == "" && !(e.added && k == keyRuntime):
			continue
		case old == "":
			old = "(unset)"
		}
		name := k
		if e.kind == kindEnv {
			for f, ck := range flagKey {
				if ck == k {
					name = "--" + f
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%s %s -> %s", name, old, unit.Endpoint))
	}
	if len(parts) == 0 {
		return "kubelet endpoint -> " + unit.Endpoint
	}
	return "kubelet " + strings.Join(parts, ", ")
}

// planInstallEdits computes every kubelet file edit of an install.
func planInstallEdits(h *host, lay layout) ([]fileEdit, error) {
	var edits []fileEdit
	runtimeFlag := false
	for _, f := range lay.EnvFiles {
		b, ok, err := h.readFile(f, maxHostFile)
		if err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		out, found, err := editEnv(b, toCriguard(f))
		if err != nil {
			return nil, err
		}
		if _, ok := found[keyRuntime]; ok {
			runtimeFlag = true
		}
		if string(out) != string(b) {
			edits = append(edits, fileEdit{path: f, backup: backupName(f), kind: kindEnv, old: b, new: out, found: found})
		}
	}
	for _, f := range []string{lay.Config, lay.InstanceConfig} {
		b, ok, err := h.readFile(f, maxHostFile)
		if err != nil {
			return nil, err
		}
		if !ok {
			if f == lay.Config && !runtimeFlag {
				return nil, fmt.Errorf("kubelet configuration %s not found on the host and no --%s flag in %v: pass --kubelet-config with the file kubelet's --config names",
					f, flagRuntime, lay.EnvFiles)
			}
			continue
		}
		add := ""
		if f == lay.Config && !runtimeFlag {
			add = unit.Endpoint
		}
		out, found, err := editConfig(b, toCriguard(f), add)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		added := add != "" && found[keyRuntime] == ""
		if added {
			found[keyRuntime] = "" // recorded as absent before the install
		}
		if string(out) != string(b) {
			edits = append(edits, fileEdit{path: f, backup: backupName(f), kind: kindConfig, added: added, old: b, new: out, found: found})
		}
	}
	return edits, nil
}

// service runs (or in a dry run, reports) one service action.
func service(o *Options, h *host, what string, f func() error) error {
	h.change("%s", what)
	if o.DryRun {
		return nil
	}
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// wait retries check every half second until it succeeds or timeout passes.
func wait(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(actx)
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func readBinary(p string) ([]byte, error) {
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the running criguard binary: %w (pass --binary)", err)
		}
		p = exe
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read criguard binary: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBinary+1))
	if err != nil {
		return nil, fmt.Errorf("read criguard binary %s: %w", p, err)
	}
	if len(b) > maxBinary {
		return nil, fmt.Errorf("criguard binary %s is larger than %d bytes", p, maxBinary)
	}
	if len(b) < 4 || string(b[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("criguard binary %s is not an ELF executable", p)
	}
	return b, nil
}

// Uninstall puts kubelet back on containerd first (restoring the original
// bytes of each file it still recognizes), restarts kubelet and waits for it,
// then stops, disables and removes criguard's unit and binary and the
// installer's state. /etc/criguard (policy and keys, the operator's) stays
// unless Purge is set.
func Uninstall(ctx context.Context, o Options) (Result, error) {
	return locked(ctx, o, uninstall)
}

// uninstall puts kubelet back on containerd, and only once kubelet is healthy
// there removes criguard.
func uninstall(ctx context.Context, o *Options, h *host) error {
	lay, st, err := readInstall(o, h)
	if err != nil {
		return err
	}
	if err := restoreKubelet(ctx, o, h, lay, st); err != nil {
		return err
	}
	return removeCriguard(ctx, o, h)
}

// restoreKubelet points kubelet's files back at containerd, restarts kubelet
// and waits until it is healthy.
func restoreKubelet(ctx context.Context, o *Options, h *host, lay layout, st *installState) error {
	// An install record means this uninstall has not finished before: the
	// files may already be restored while the running kubelet still uses
	// criguard, so kubelet restarts in any case before criguard stops.
	recorded, err := h.exists(statePath)
	if err != nil {
		return err
	}
	kubeletChanged := recorded
	for _, f := range kubeletFiles(st, lay) {
		changed, err := restoreFile(o, h, f, st.find(f), lay)
		if err != nil {
			return err
		}
		kubeletChanged = kubeletChanged || changed
	}
	if !kubeletChanged {
		return nil
	}
	if err := service(o, h, "systemctl restart "+unit.KubeletUnit, func() error { return o.Services.Restart(ctx, unit.KubeletUnit) }); err != nil {
		return err
	}
	if o.DryRun {
		return nil
	}
	if err := wait(ctx, o.timeout(), o.Ready.KubeletReady); err != nil {
		return fmt.Errorf("kubelet did not become healthy on containerd within %s: %w; criguard was left running (run uninstall again once kubelet is healthy)", o.timeout(), err)
	}
	return nil
}

// kubeletFiles lists, once each, every file the state names, then the
// layout's files: one that points at criguard without a record (state lost)
// is restored too.
func kubeletFiles(st *installState, lay layout) []string {
	all := make([]string, 0, len(st.Files)+len(lay.EnvFiles)+2)
	for _, f := range st.Files {
		all = append(all, f.Path)
	}
	all = append(append(all, lay.EnvFiles...), lay.Config, lay.InstanceConfig)
	seen := map[string]bool{}
	var order []string
	for _, f := range all {
		if !seen[f] {
			seen[f] = true
			order = append(order, f)
		}
	}
	return order
}

// restoreFile points one kubelet file back at containerd and reports whether
// that changed it. A file gone from the host has nothing to restore.
func restoreFile(o *Options, h *host, f string, rec *editedFile, lay layout) (bool, error) {
	cur, ok, err := h.readFile(f, maxHostFile)
	if err != nil {
		return false, err
	}
	if !ok {
		if rec != nil {
			o.logf("%s is gone from the host; nothing to restore there", f)
		}
		return false, nil
	}
	want, err := restoredBytes(o, h, f, cur, rec, lay)
	if err != nil {
		return false, err
	}
	return h.ensureFile(f, want, 0, "kubelet endpoint restored")
}

// restoredBytes is what kubelet file f (now cur) holds back on containerd:
// the backup byte for byte while f still has the bytes the install wrote,
// else cur with only kubelet's endpoints put back, so later edits survive.
func restoredBytes(o *Options, h *host, f string, cur []byte, rec *editedFile, lay layout) ([]byte, error) {
	if rec != nil && sha256hex(cur) == rec.InstalledSHA256 {
		orig, ok, err := h.readFile(rec.Backup, maxHostFile)
		if err != nil {
			return nil, err
		}
		if ok {
			return orig, nil
		}
	}
	original := map[string]string{}
	if rec != nil {
		original = rec.Original
		o.logf("%s changed since install; restoring only kubelet's endpoints in it", f)
	}
	var want []byte
	var err error
	if fileKind(f, rec, lay) == kindEnv {
		want, _, err = editEnv(cur, fromCriguard(original))
	} else {
		want, _, err = editConfig(cur, fromCriguard(original), "")
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	return want, nil
}

// removeCriguard stops, disables and removes criguard's unit and binary and
// the installer's state; /etc/criguard (the operator's) only with Purge.
func removeCriguard(ctx context.Context, o *Options, h *host) error {
	unitPresent, err := h.exists(unit.UnitPath)
	if err != nil {
		return err
	}
	if unitPresent {
		if err := stopCriguard(ctx, o, h); err != nil {
			return err
		}
	}
	if err := disableCriguard(ctx, o, h); err != nil {
		return err
	}
	if unitPresent {
		if err := h.remove(unit.UnitPath, "systemd unit"); err != nil {
			return err
		}
		if err := service(o, h, "systemctl daemon-reload", func() error { return o.Services.DaemonReload(ctx) }); err != nil {
			return err
		}
	}
	if err := h.remove(unit.BinaryPath, "criguard binary"); err != nil {
		return err
	}
	if err := h.removeAll(unit.StateDir, "installer state and kubelet backups"); err != nil {
		return err
	}
	if o.Purge {
		return h.removeAll(unit.ConfigDir, "policy and keys (--purge)")
	}
	if ok, _ := h.exists(unit.ConfigDir); ok {
		o.logf("kept %s (policy and keys); uninstall with --purge removes it", unit.ConfigDir)
	}
	return nil
}

// stopCriguard stops the unit if it runs.
func stopCriguard(ctx context.Context, o *Options, h *host) error {
	active, err := o.Services.IsActive(ctx, unit.UnitName)
	if err != nil {
		return fmt.Errorf("ask systemd whether %s runs: %w", unit.UnitName, err)
	}
	if !active {
		return nil
	}
	return service(o, h, "systemctl stop "+unit.UnitName, func() error { return o.Services.Stop(ctx, unit.UnitName) })
}

// disableCriguard disables the unit if kubelet.service still wants it.
func disableCriguard(ctx context.Context, o *Options, h *host) error {
	enabled, err := h.exists(unit.WantsLink)
	if err != nil || !enabled {
		return err
	}
	if err := service(o, h, "systemctl disable "+unit.UnitName, func() error { return o.Services.Disable(ctx, unit.UnitName) }); err != nil {
		return err
	}
	// An emptied .wants directory means nothing; leave none behind.
	wants := path.Dir(unit.WantsLink)
	if names, err := h.readDirAll(wants); err == nil && len(names) == 0 {
		return h.remove(wants, "empty directory")
	}
	return nil
}

// fileKind says how to edit f: as recorded at install, else env for the
// layout's EnvironmentFiles and config for everything else.
func fileKind(f string, rec *editedFile, lay layout) string {
	if rec != nil && rec.Kind != "" {
		return rec.Kind
	}
	for _, e := range lay.EnvFiles {
		if e == f {
			return kindEnv
		}
	}
	return kindConfig
}
