package trust

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tuf"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// CachedRootFile is the name of the TUF-verified trusted root in a cache
// directory.
const CachedRootFile = "trusted_root.json"

// RefreshOptions say where to refresh the trusted root from and where to keep it.
type RefreshOptions struct {
	// CacheDir keeps the TUF metadata and the verified trusted root; it must
	// be private to criguard (root-owned, 0700).
	CacheDir string
	// MirrorURL is the TUF repository (default: Sigstore's public-good CDN).
	MirrorURL string
	// TUFRoot is the TUF trust anchor (default: the one sigstore-go embeds;
	// an expired anchor still bootstraps, as TUF walks the root versions).
	TUFRoot []byte
	// Timeout bounds each HTTP request of the refresh (default 30s).
	Timeout time.Duration
}

// Refresh updates the trusted root through TUF (sigstore-go's client: every
// metadata file and the trusted_root.json target are verified against the TUF
// trust anchor) and stores the verified root in CacheDir. It never runs on a
// verdict's path: callers run it in the background and keep using what they
// have when it fails. It returns when ctx ends, leaving the update to finish
// or time out on its own (sigstore-go's client takes no context).
func Refresh(ctx context.Context, o RefreshOptions) (*root.TrustedRoot, error) {
	if o.CacheDir == "" {
		return nil, errors.New("trusted root refresh: no cache directory")
	}
	opts := tuf.DefaultOptions()
	opts.CachePath = filepath.Join(o.CacheDir, "tuf")
	if o.MirrorURL != "" {
		opts.RepositoryBaseURL = o.MirrorURL
	}
	if o.TUFRoot != nil {
		opts.Root = o.TUFRoot
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	f := fetcher.NewDefaultFetcher()
	f.SetHTTPClient(&http.Client{Timeout: o.Timeout})
	opts.Fetcher = f
	type out struct {
		tr  *root.TrustedRoot
		err error
	}
	done := make(chan out, 1)
	go func() {
		tr, err := refresh(opts, o.CacheDir)
		done <- out{tr, err}
	}()
	select {
	case r := <-done:
		return r.tr, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("trusted root refresh from %s: %w", opts.RepositoryBaseURL, ctx.Err())
	}
}

func refresh(opts *tuf.Options, dir string) (*root.TrustedRoot, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("trusted root refresh: %w", err)
	}
	c, err := tuf.New(opts)
	if err != nil {
		return nil, fmt.Errorf("trusted root refresh from %s: %w", opts.RepositoryBaseURL, err)
	}
	data, err := c.GetTarget(CachedRootFile)
	if err != nil {
		return nil, fmt.Errorf("trusted root refresh from %s: %w", opts.RepositoryBaseURL, err)
	}
	tr, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("trusted root refresh from %s: %w", opts.RepositoryBaseURL, err)
	}
	if err := writeAtomic(filepath.Join(dir, CachedRootFile), data); err != nil {
		return nil, fmt.Errorf("trusted root refresh: caching: %w", err)
	}
	return tr, nil
}

// writeAtomic replaces path with data so that a reader sees the old or the
// new file, never a partial one.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".trusted_root-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Cached loads the trusted root a previous Refresh stored in dir.
func Cached(dir string) (*root.TrustedRoot, error) {
	return LoadFile(filepath.Join(dir, CachedRootFile))
}
