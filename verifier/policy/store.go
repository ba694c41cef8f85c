package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/criguard/criguard/verifier/trust"
)

// ReloadResult reports one reload attempt to the OnReload hook.
type ReloadResult struct {
	// Generation is the generation in force after the attempt.
	Generation uint64
	// Changed is true when a new set replaced the old one.
	Changed  bool
	Err      error // non-nil: the new policy was refused, the old one stays
	Warnings []Warning
}

// StoreOptions configures a Store.
type StoreOptions struct {
	Logger *slog.Logger
	// OnReload, if set, is called after every reload attempt (metrics).
	OnReload func(ReloadResult)
	// Debounce is how long Watch waits for a burst of file events to settle
	// (editors write, rename and chmod in quick succession); default 200ms.
	Debounce time.Duration
	// Retry is how often Watch tries again to watch a policy directory that
	// is missing or could not be watched; default 2s.
	Retry time.Duration
	// TrustedRoot is the Sigstore trusted root file every verification trusts
	// (reloaded with the policy: a change makes a new generation, a broken
	// file keeps the last good set); "" means the embedded public-good root.
	TrustedRoot string
}

// Store holds the current policy set and replaces it atomically on reload.
type Store struct {
	path string
	opts StoreOptions
	log  *slog.Logger
	cur  atomic.Pointer[Set]
	mu   sync.Mutex // serializes reloads
	gen  uint64
}

// NewStore loads path; an invalid policy is an error (nothing to fall back on).
func NewStore(path string, opts StoreOptions) (*Store, error) {
	s := &Store{path: path, opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	set, err := s.load()
	if err != nil {
		return nil, err
	}
	s.install(set)
	for _, w := range set.Warnings {
		s.log.Warn("policy: skipped", "where", w.String())
	}
	return s, nil
}

// load reads the policy and the trusted root into one set; the set's digest
// covers both, so a changed root is a new generation (and a fresh cache).
func (s *Store) load() (*Set, error) {
	set, err := Load(s.path)
	if err != nil {
		return nil, err
	}
	tm, sum, err := LoadTrust(s.opts.TrustedRoot)
	if err != nil {
		return nil, err
	}
	set.UseTrust(tm)
	set.Digest += "+" + sum
	return set, nil
}

// LoadTrust reads a trusted root file, or the embedded public-good root for
// "", and returns it with a digest of its bytes.
func LoadTrust(path string) (root.TrustedMaterial, string, error) {
	var (
		tr  *root.TrustedRoot
		err error
	)
	if path == "" {
		tr, err = trust.PublicGood()
	} else {
		tr, err = trust.LoadFile(path)
	}
	if err != nil {
		return nil, "", err
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		return nil, "", fmt.Errorf("trusted root %s: %w", path, err)
	}
	sum := sha256.Sum256(b)
	return tr, hex.EncodeToString(sum[:]), nil
}

// UseTrust makes every policy of the set verify against tm.
func (set *Set) UseTrust(tm root.TrustedMaterial) {
	for _, p := range set.Policies {
		p.Trust = tm
	}
}

// NewStaticStore holds a set loaded elsewhere (criguard verify, tests); Reload
// and Watch are not available.
func NewStaticStore(set *Set) *Store {
	s := &Store{log: slog.New(slog.DiscardHandler)}
	s.install(set)
	return s
}

func (s *Store) install(set *Set) {
	s.gen++
	set.Generation = s.gen
	s.cur.Store(set)
}

// Current returns the set in force (never modified after it is installed).
func (s *Store) Current() *Set { return s.cur.Load() }

// Path is the policy path the store reloads from.
func (s *Store) Path() string { return s.path }

// Reload loads the path again. A valid set with different content replaces the
// current one (new generation); an invalid one is refused, the current one
// stays, and the error is returned, logged and reported to OnReload.
func (s *Store) Reload() error {
	if s.path == "" {
		return errors.New("policy: this store has no path to reload from")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set, err := s.load()
	res := ReloadResult{}
	switch {
	case err != nil:
		res.Err = err
		s.log.Error("policy: reload refused, the previous policy stays in force", "path", s.path, "generation", s.gen, "error", err)
	case s.cur.Load() != nil && s.cur.Load().Digest == set.Digest:
		// Same content (an event without a change): keep the generation and
		// with it the verdict cache.
	default:
		s.install(set)
		res.Changed, res.Warnings = true, set.Warnings
		s.log.Info("policy: reloaded", "path", s.path, "generation", s.gen, "policies", len(set.Policies))
		for _, w := range set.Warnings {
			s.log.Warn("policy: skipped", "where", w.String())
		}
	}
	res.Generation = s.gen
	if s.opts.OnReload != nil {
		s.opts.OnReload(res)
	}
	return err
}

// Watch reloads on changes under the policy path and on every value from
// trigger (the serve command feeds it SIGHUP), until ctx ends.
//
// It watches the directory (for a file path, the file's directory), not the
// files: editors replace a file by renaming a new one over it, and a mounted
// ConfigMap swaps its "..data" symlink, and neither is seen by a watch on the
// old file. Any event in the directory triggers a reload after a short quiet
// period; a reload that finds the same content changes nothing.
//
// The directory itself may be removed, renamed or replaced as a whole (rm -rf
// and cp -r, a tool renaming a new tree into place); its watch goes with the
// old directory. So the parent is watched too, and the directory's watch is
// re-established whenever the directory at the path is a different one. While
// the path is missing, reloads fail (the last good policy stays, and each
// failure is logged and reported) and Watch retries every Retry until it can
// watch the path again: it never stops watching silently.
func (s *Store) Watch(ctx context.Context, trigger <-chan struct{}) error {
	if s.path == "" {
		return errors.New("policy: this store has no path to watch")
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy: watching %s: %w", s.path, err)
	}
	defer w.Close()
	dir, err := filepath.Abs(s.path)
	if err != nil {
		return fmt.Errorf("policy: watching %s: %w", s.path, err)
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		dir = filepath.Dir(dir)
	}
	pw := &pathWatch{w: w, dir: dir, parent: filepath.Dir(dir), log: s.log, path: s.path,
		retryEvery: orDefault(s.opts.Retry, 2*time.Second), retry: stoppedTimer()}
	defer pw.retry.Stop()
	// At start the directory was just loaded: failing to watch it now is a
	// setup problem (inotify limits) the caller reports. A parent that cannot
	// be watched only costs seeing a replacement late, and is retried.
	if _, err := pw.rewatch(); pw.cur == nil {
		return fmt.Errorf("policy: %w", err)
	}
	// Whatever changed between the first load and this watch starting would
	// otherwise go unnoticed until the next event.
	_ = s.Reload()
	return s.watchLoop(ctx, trigger, pw)
}

// watchLoop reloads after events settle, on trigger, and when a directory
// that could not be watched can be again.
func (s *Store) watchLoop(ctx context.Context, trigger <-chan struct{}, pw *pathWatch) error {
	debounce := orDefault(s.opts.Debounce, 200*time.Millisecond)
	timer := stoppedTimer()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
			s.log.Info("policy: reload requested", "path", s.path)
			_, _ = pw.rewatch()
			_ = s.Reload()
		case ev, ok := <-pw.w.Events:
			if !ok {
				return errors.New("policy: file watcher closed")
			}
			if !pw.relevant(ev.Name) {
				continue
			}
			// The directory itself changed (or is still missing): watch
			// the new one now, so nothing written into it is missed.
			if ev.Name == pw.dir || pw.lastErr != "" {
				_, _ = pw.rewatch()
			}
			timer.Reset(debounce)
		case err, ok := <-pw.w.Errors:
			if !ok {
				return errors.New("policy: file watcher closed")
			}
			s.log.Error("policy: file watcher error; reloading to be safe", "error", err)
			timer.Reset(debounce)
		case <-timer.C:
			_, _ = pw.rewatch()
			_ = s.Reload()
		case <-pw.retry.C:
			if added, _ := pw.rewatch(); added {
				_ = s.Reload()
			}
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// stoppedTimer is a timer that fires only once Reset.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// pathWatch keeps an fsnotify watch on a policy directory and its parent.
type pathWatch struct {
	w      *fsnotify.Watcher
	dir    string
	parent string
	cur    os.FileInfo // the directory the current watch is on

	log        *slog.Logger
	path       string // the policy path as configured, for logs
	retryEvery time.Duration
	retry      *time.Timer // fires when a failed watch should be tried again
	lastErr    string      // the last watch failure logged, to log each once
}

// rewatch makes sure the directory is watched, logging a failure once and
// arming the retry; it reports whether a new watch was set up (the directory
// may have changed unseen before it).
func (p *pathWatch) rewatch() (bool, error) {
	added, err := p.ensure()
	if err != nil {
		if err.Error() != p.lastErr {
			p.lastErr = err.Error()
			p.log.Error("policy: cannot watch the policy directory; the last good policy stays in force, retrying",
				"path", p.path, "retry", p.retryEvery, "error", err)
		}
		p.retry.Reset(p.retryEvery)
		return added, err
	}
	if p.lastErr != "" {
		p.lastErr = ""
		p.log.Info("policy: watching the policy directory again", "path", p.path, "dir", p.dir)
	}
	return added, nil
}

// relevant reports whether an event on name concerns the policy directory:
// the parent's other entries (say, the rest of /etc) do not.
func (p *pathWatch) relevant(name string) bool {
	return name == p.dir || filepath.Dir(name) == p.dir
}

func (p *pathWatch) watching(path string) bool {
	return slices.Contains(p.w.WatchList(), path)
}

// ensure watches the parent and the directory now at p.dir, replacing a watch
// on a directory that is no longer there. It reports whether it added the
// directory's watch; an error means the directory is not watched (missing,
// or the watch failed), and the caller retries.
func (p *pathWatch) ensure() (bool, error) {
	var errs []error
	if p.parent != p.dir && !p.watching(p.parent) {
		if err := p.w.Add(p.parent); err != nil {
			// Not fatal while the directory's own watch works: only its
			// replacement would go unseen until a retry.
			errs = append(errs, fmt.Errorf("watching %s (to see %s replaced): %w", p.parent, p.dir, err))
		}
	}
	st, err := os.Stat(p.dir)
	if err != nil {
		return false, errors.Join(append(errs, fmt.Errorf("policy directory %s: %w", p.dir, err))...)
	}
	if p.cur != nil && os.SameFile(p.cur, st) && p.watching(p.dir) {
		return false, errors.Join(errs...)
	}
	// A watch still on the path belongs to a directory that was replaced
	// (or never existed); drop it before watching the new one.
	_ = p.w.Remove(p.dir)
	p.cur = nil
	if err := p.w.Add(p.dir); err != nil {
		return false, errors.Join(append(errs, fmt.Errorf("watching %s: %w", p.dir, err))...)
	}
	p.cur = st
	return true, errors.Join(errs...)
}

// WatchForever is Watch for the life of ctx: a watch that stops (the watched
// directory replaced or removed, inotify limits) is started again after a
// reload that picks up what changed while nothing watched, with backoff up to
// 30 s; meanwhile trigger still reloads. Losing the watch must never stop the
// node's runtime nor leave an edit unnoticed for long.
func (s *Store) WatchForever(ctx context.Context, trigger <-chan struct{}) {
	const maxBackoff = 30 * time.Second
	backoff := time.Second
	for {
		started := time.Now()
		err := s.Watch(ctx, trigger)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > maxBackoff {
			backoff = time.Second
		}
		s.log.Error("policy file watch stopped; watching again", "path", s.path, "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-trigger:
		case <-t.C:
		}
		t.Stop()
		_ = s.Reload()
		backoff = min(2*backoff, maxBackoff)
	}
}

// WatchTrustedRoot reloads the set when the trusted root file changes (its
// directory is watched, so a file replaced by rename or a ConfigMap's symlink
// swap is seen), until ctx ends. A broken root is refused like a broken
// policy: the last good set stays.
func (s *Store) WatchTrustedRoot(ctx context.Context) error {
	if s.opts.TrustedRoot == "" || s.path == "" {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("trusted root: watching %s: %w", s.opts.TrustedRoot, err)
	}
	defer w.Close()
	dir := filepath.Dir(s.opts.TrustedRoot)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("trusted root: watching %s: %w", dir, err)
	}
	// A change made before the watch was in place is seen now (a reload of
	// the same bytes changes nothing).
	_ = s.Reload()
	debounce := orDefault(s.opts.Debounce, 200*time.Millisecond)
	timer := stoppedTimer()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return errors.New("trusted root: file watcher closed")
			}
			// Any event in the directory: a reload that finds the same
			// bytes changes nothing.
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("trusted root: file watcher closed")
			}
			s.log.Error("trusted root: file watcher error; reloading to be safe", "error", err)
			timer.Reset(debounce)
		case <-timer.C:
			_ = s.Reload()
		}
	}
}
