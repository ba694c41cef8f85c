package nodeinstall

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// maxHostFile bounds every host file the installer reads (kubelet configs, env
// files, policies, keys, state); the criguard binary has its own bound.
const maxHostFile = 4 << 20

// maxBinary bounds the criguard binary copied to the host.
const maxBinary = 512 << 20

// host is the node's file system under --host-root. Every path is the absolute
// path on the host; os.Root confines every operation below the host root, so a
// symlink on the host can never make the installer write into the pod (or,
// under tests, outside the temporary root). In dry-run mode it only reports.
type host struct {
	root   *os.Root
	dryRun bool
	log    func(format string, args ...any)
	// changed lists what this run changed (or would change, in dry-run).
	changed []string
}

func openHost(hostRoot string, dryRun bool, log func(string, ...any)) (*host, error) {
	if hostRoot == "" {
		hostRoot = "/"
	}
	r, err := os.OpenRoot(hostRoot)
	if err != nil {
		return nil, fmt.Errorf("open host root %s (mount the node's / there): %w", hostRoot, err)
	}
	return &host{root: r, dryRun: dryRun, log: log}, nil
}

func (h *host) Close() error { return h.root.Close() }

// rel turns an absolute host path into a path relative to the host root.
func rel(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return strings.TrimPrefix(p, "/")
}

// change records (and in dry-run prints) one change.
func (h *host) change(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.changed = append(h.changed, msg)
	if h.dryRun {
		h.log("would %s", msg)
	} else {
		h.log("%s", msg)
	}
}

// readFile reads a host file of at most limit bytes. A missing file returns
// (nil, false, nil).
func (h *host) readFile(p string, limit int64) ([]byte, bool, error) {
	f, err := h.root.Open(rel(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s on the host: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("read %s on the host: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("read %s on the host: not a regular file (%s)", p, st.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, false, fmt.Errorf("read %s on the host: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, false, fmt.Errorf("read %s on the host: larger than %d bytes", p, limit)
	}
	return b, true, nil
}

func (h *host) exists(p string) (bool, error) {
	_, err := h.root.Lstat(rel(p))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s on the host: %w", p, err)
	}
	return true, nil
}

// mkdirAll creates a host directory (and parents) if missing.
func (h *host) mkdirAll(p string, mode fs.FileMode) error {
	ok, err := h.exists(p)
	if err != nil || ok {
		return err
	}
	h.change("create directory %s", p)
	if h.dryRun {
		return nil
	}
	if err := h.root.MkdirAll(rel(p), mode); err != nil {
		return fmt.Errorf("create %s on the host: %w", p, err)
	}
	return nil
}

// ensureFile writes data to p atomically unless p already holds exactly data.
// It reports whether it changed (or in dry-run would change) the file.
// An existing file keeps its owner; mode is applied either way.
func (h *host) ensureFile(p string, data []byte, mode fs.FileMode, what string) (bool, error) {
	old, ok, err := h.readFile(p, int64(len(data))+maxHostFile)
	if err != nil {
		return false, err
	}
	if ok && bytes.Equal(old, data) {
		return false, nil
	}
	verb := "write"
	if ok {
		verb = "replace"
	}
	h.change("%s %s (%s, %d bytes)", verb, p, what, len(data))
	if h.dryRun {
		return true, nil
	}
	return true, h.writeAtomic(p, data, mode)
}

// writeAtomic writes a temporary file in the same directory, fsyncs it,
// renames it over p and fsyncs the directory: p holds either the old or the
// new bytes, even across a crash. Owner and mode of an existing p are kept
// when mode is 0.
func (h *host) writeAtomic(p string, data []byte, mode fs.FileMode) error {
	if h.dryRun {
		return nil
	}
	dir, base := path.Split(rel(p))
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	uid, gid := -1, -1
	if st, err := h.root.Stat(rel(p)); err == nil {
		if mode == 0 {
			mode = st.Mode().Perm()
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
	}
	if mode == 0 {
		mode = 0o644
	}
	if err := h.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s on the host: %w", p, err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("write %s on the host: %w", p, err)
	}
	tmp := path.Join(dir, "."+base+".criguard-"+hex.EncodeToString(rnd[:]))
	f, err := h.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s on the host: %w", p, err)
	}
	cleanup := func() { _ = h.root.Remove(tmp) }
	if _, err := f.Write(data); err != nil {
		f.Close()
		cleanup()
		return fmt.Errorf("write %s on the host: %w", p, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		cleanup()
		return fmt.Errorf("write %s on the host: %w", p, err)
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil && !errors.Is(err, fs.ErrPermission) {
			f.Close()
			cleanup()
			return fmt.Errorf("write %s on the host: keep owner: %w", p, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		cleanup()
		return fmt.Errorf("write %s on the host: fsync: %w", p, err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return fmt.Errorf("write %s on the host: %w", p, err)
	}
	if err := h.root.Rename(tmp, rel(p)); err != nil {
		cleanup()
		return fmt.Errorf("write %s on the host: rename: %w", p, err)
	}
	return h.syncDir(dir)
}

func (h *host) syncDir(dir string) error {
	d, err := h.root.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s on the host: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory /%s on the host: %w", dir, err)
	}
	return nil
}

// planRemove records the removal of p when p is present, and reports
// whether to carry it out (not in a dry run).
func (h *host) planRemove(p, what string) (bool, error) {
	ok, err := h.exists(p)
	if err != nil || !ok {
		return false, err
	}
	h.change("remove %s (%s)", p, what)
	return !h.dryRun, nil
}

// remove deletes a host file or empty directory if present.
func (h *host) remove(p, what string) error {
	if act, err := h.planRemove(p, what); err != nil || !act {
		return err
	}
	if err := h.root.Remove(rel(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s on the host: %w", p, err)
	}
	dir, _ := path.Split(rel(p))
	if dir = strings.TrimSuffix(dir, "/"); dir == "" {
		dir = "."
	}
	return h.syncDir(dir)
}

// removeAll deletes a host directory tree if present.
func (h *host) removeAll(p, what string) error {
	if act, err := h.planRemove(p, what); err != nil || !act {
		return err
	}
	if err := h.root.RemoveAll(rel(p)); err != nil {
		return fmt.Errorf("remove %s on the host: %w", p, err)
	}
	return nil
}

// readDirFiles lists the regular files of a host directory (names only).
func (h *host) readDirFiles(p string) ([]string, error) {
	f, err := h.root.Open(rel(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s on the host: %w", p, err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s on the host: %w", p, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// readDirAll lists every entry of a host directory (an error if it is absent).
func (h *host) readDirAll(p string) ([]string, error) {
	f, err := h.root.Open(rel(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// lock takes the node-wide installer lock, waiting until ctx ends: an
// install pod and an uninstall pod, or a policy sync, must not interleave
// their edits. The lock is a flock on the host's root directory itself, so it
// leaves no file behind and both pods (each with the host's / mounted) lock
// the same inode. A dry run writes nothing and takes no lock.
func (h *host) lock(ctx context.Context) (unlock func(), err error) {
	if h.dryRun {
		return func() {}, nil
	}
	f, err := h.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("installer lock on the host root: %w", err)
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("installer lock on the host root: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("another criguard installer is working on this node: %w", ctx.Err())
		case <-t.C:
		}
	}
}
