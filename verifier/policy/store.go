package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
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
	set, err := Load(path)
	if err != nil {
		return nil, err
	}
	s.install(set)
	for _, w := range set.Warnings {
		s.log.Warn("policy: skipped", "where", w.String())
	}
	return s, nil
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
	set, err := Load(s.path)
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
func (s *Store) Watch(ctx context.Context, trigger <-chan struct{}) error {
	if s.path == "" {
		return errors.New("policy: this store has no path to watch")
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy: watching %s: %w", s.path, err)
	}
	defer w.Close()
	dir := s.path
	if st, err := os.Stat(s.path); err == nil && !st.IsDir() {
		dir = filepath.Dir(s.path)
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("policy: watching %s: %w", dir, err)
	}
	// Whatever changed between the first load and this watch starting would
	// otherwise go unnoticed until the next event.
	_ = s.Reload()
	debounce := s.opts.Debounce
	if debounce <= 0 {
		debounce = 200 * time.Millisecond
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
			s.log.Info("policy: reload requested", "path", s.path)
			_ = s.Reload()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("policy: file watcher closed")
			}
			_ = ev
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("policy: file watcher closed")
			}
			s.log.Error("policy: file watcher error; reloading to be safe", "error", err)
			timer.Reset(debounce)
		case <-timer.C:
			_ = s.Reload()
		}
	}
}
