// Package registry reads manifests, referrers and blobs from OCI registries for
// signature verification, with every read bounded and every call under the
// caller's context.
//
// It speaks the distribution API directly over go-containerregistry's
// authentication transports rather than through pkg/v1/remote, so that each
// lookup costs exactly one round trip, sizes are refused before bodies are read,
// and content fetched by digest is checked against that digest.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/criguard/criguard/verifier/imageref"
)

// Media types of manifests this package asks for.
const (
	OCIManifest       = "application/vnd.oci.image.manifest.v1+json"
	OCIIndex          = "application/vnd.oci.image.index.v1+json"
	DockerManifest    = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestLst = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var manifestAccept = strings.Join([]string{OCIIndex, OCIManifest, DockerManifestLst, DockerManifest}, ", ")

// ErrNotFound is a 404 from the registry: the tag, manifest or blob does not exist.
var ErrNotFound = errors.New("not found")

// ErrTooLarge is returned when content is larger than the caller's limit; it is
// refused before (or, without a Content-Length, while) being read.
var ErrTooLarge = errors.New("larger than the limit")

// ErrBadContent is returned when the registry served bytes whose digest or size
// differs from what was asked for.
var ErrBadContent = errors.New("content does not match its digest")

// StatusError is an unexpected HTTP status from the registry (5xx, 401, 429 ...).
type StatusError struct {
	Method string
	URL    string
	Code   int
}

func (e *StatusError) Error() string {
	hint := ""
	switch e.Code {
	case http.StatusUnauthorized, http.StatusForbidden:
		hint = " (credentials missing or refused: check the image pull secret or the node's docker config)"
	case http.StatusTooManyRequests:
		hint = " (rate limited)"
	}
	return fmt.Sprintf("%s %s: registry answered %d %s%s", e.Method, e.URL, e.Code, http.StatusText(e.Code), hint)
}

// Client holds what is shared by every repository access: the base transport
// (connection reuse) and the redirect policy.
type Client struct {
	base http.RoundTripper
}

// New returns a Client over base (nil means a clone of http.DefaultTransport).
// Every response body that passes through it is bounded (see MaxBody).
func New(base http.RoundTripper) *Client {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &Client{base: &boundedTransport{base: base}}
}

// MaxBody bounds every response body this package does not read with a limit
// of its own: go-containerregistry drains a ping's answer to reuse the
// connection (an endless one would be read until the deadline), and reads
// token and error answers. Past it, reads fail with ErrTooLarge and the
// connection is dropped rather than drained.
const MaxBody = 1 << 20

// bodyLimitKey carries a request's own body bound (the caller's limit) to
// boundedTransport, for the requests this package reads itself.
type bodyLimitKey struct{}

// boundedTransport bounds every response body: to the limit the request's
// context carries, else MaxBody. Body reads stay under the request's context
// (net/http ends them when it is done), so they are bounded in time too.
type boundedTransport struct {
	base http.RoundTripper
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	limit := int64(MaxBody)
	if n, ok := req.Context().Value(bodyLimitKey{}).(int64); ok && n > 0 {
		limit = n
	}
	resp.Body = &boundedBody{rc: resp.Body, left: limit, limit: limit, url: req.URL.Redacted()}
	return resp, nil
}

// boundedBody reads at most limit bytes of rc; one more byte is an error, not
// a silent truncation a parser could take for the whole answer.
type boundedBody struct {
	rc    io.ReadCloser
	left  int64
	limit int64
	url   string
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// At the limit: the answer is fine if it ends here.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("the answer to %s is over %d bytes: %w", b.url, b.limit, ErrTooLarge)
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }

// Repo is read access to one repository with one credential. It authenticates
// lazily: requests go out anonymously until the registry answers 401, then the
// token handshake runs once and the request is repeated. A Repo is safe for
// concurrent use.
type Repo struct {
	c    *Client
	repo name.Repository
	auth authn.Authenticator

	mu     sync.Mutex
	rt     http.RoundTripper // authenticated transport once a 401 was seen
	scheme string            // "" until decided
}

// Repo returns access to repo with auth (nil means anonymous).
func (c *Client) Repo(repo name.Repository, auth authn.Authenticator) *Repo {
	if auth == nil {
		auth = authn.Anonymous
	}
	return &Repo{c: c, repo: repo, auth: auth}
}

// Name is the repository's full name (registry/path).
func (r *Repo) Name() string { return r.repo.Name() }

// state returns the transport and scheme to use, deciding the scheme on first use.
// Loopback registries use http and public ones https without a probe; private
// addresses that go-containerregistry would also try over http are pinged once.
func (r *Repo) state(ctx context.Context) (http.RoundTripper, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scheme != "" {
		if r.rt != nil {
			return r.rt, r.scheme, nil
		}
		return r.c.base, r.scheme, nil
	}
	reg := r.repo.Registry
	switch {
	case imageref.IsLoopback(reg.RegistryStr()):
		r.scheme = "http"
	case reg.Scheme() == "http":
		ch, err := transport.Ping(ctx, reg, r.c.base)
		if err != nil {
			return nil, "", fmt.Errorf("reaching registry %s: %w", reg.RegistryStr(), err)
		}
		r.scheme = "https"
		if ch.Insecure {
			r.scheme = "http"
		}
	default:
		r.scheme = "https"
	}
	return r.c.base, r.scheme, nil
}

// authenticate runs the registry's auth handshake (ping, then token exchange)
// once, after an anonymous request was answered 401.
func (r *Repo) authenticate(ctx context.Context, failed http.RoundTripper) (http.RoundTripper, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rt != nil && r.rt != failed {
		return r.rt, nil // another goroutine already did it
	}
	if r.rt != nil {
		return nil, fmt.Errorf("registry %s refused the credentials for %s", r.repo.RegistryStr(), r.repo.Name())
	}
	rt, err := transport.NewWithContext(ctx, r.repo.Registry, r.auth, r.c.base, []string{r.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("authenticating to registry %s for %s: %w", r.repo.RegistryStr(), r.repo.Name(), err)
	}
	r.rt = rt
	return rt, nil
}

func (r *Repo) url(scheme, kind, ref string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", scheme, r.repo.RegistryStr(), r.repo.RepositoryStr(), kind, ref)
}

const maxRedirects = 5

// do sends one request, repeating it once with credentials after a 401. A
// limit over 0 is how much of the body the caller reads (readBody), and bounds
// the body of the answer; otherwise MaxBody does.
func (r *Repo) do(ctx context.Context, method, kind, ref, accept string, limit int64) (*http.Response, error) {
	rt, scheme, err := r.state(ctx)
	if err != nil {
		return nil, err
	}
	reqCtx := ctx
	if limit > 0 {
		// readBody reads limit+1 bytes to tell "too large" from "just fits".
		reqCtx = context.WithValue(ctx, bodyLimitKey{}, limit+1)
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(reqCtx, method, r.url(scheme, kind, ref), nil)
		if err != nil {
			return nil, err
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		client := &http.Client{Transport: rt, CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			return nil
		}}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			drain(resp)
			if rt, err = r.authenticate(ctx, rt); err != nil {
				return nil, err
			}
			continue
		}
		return resp, nil
	}
}

// drain discards a little of an unwanted body so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
}

func statusError(resp *http.Response) error {
	drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s %s: %w", resp.Request.Method, resp.Request.URL.Redacted(), ErrNotFound)
	}
	return &StatusError{Method: resp.Request.Method, URL: resp.Request.URL.Redacted(), Code: resp.StatusCode}
}

// readBody reads at most limit bytes, refusing a declared length over the limit
// before reading anything.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		// Closing unread drops the connection rather than reading the body.
		return nil, fmt.Errorf("%s is %d bytes: %w (%d)", resp.Request.URL.Redacted(), resp.ContentLength, ErrTooLarge, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", resp.Request.URL.Redacted(), err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes: %w", resp.Request.URL.Redacted(), limit, ErrTooLarge)
	}
	return b, nil
}

// Descriptor is what a manifest HEAD or GET says about the manifest.
type Descriptor struct {
	MediaType string
	Digest    string
	Size      int64
}

// Digest returns "sha256:<hex>" of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Head resolves a tag or digest to the manifest's descriptor with one HEAD. When
// the registry omits Docker-Content-Digest, the manifest is fetched and hashed.
func (r *Repo) Head(ctx context.Context, ref string, limit int64) (Descriptor, error) {
	resp, err := r.do(ctx, http.MethodHead, "manifests", ref, manifestAccept, 0)
	if err != nil {
		return Descriptor{}, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		drain(resp) // no HEAD support: hash the manifest instead
		_, d, err := r.Manifest(ctx, ref, limit)
		return d, err
	default:
		return Descriptor{}, statusError(resp)
	}
	drain(resp)
	d := Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: resp.Header.Get("Docker-Content-Digest"), Size: resp.ContentLength}
	if imageref.ValidDigest(d.Digest) {
		if strings.HasPrefix(ref, "sha256:") && d.Digest != ref {
			return Descriptor{}, fmt.Errorf("registry answered digest %s for %s: %w", d.Digest, ref, ErrBadContent)
		}
		return d, nil
	}
	_, d, err = r.Manifest(ctx, ref, limit)
	return d, err
}

// Manifest fetches a manifest by tag or digest (at most limit bytes). Content
// fetched by digest must hash to that digest.
func (r *Repo) Manifest(ctx context.Context, ref string, limit int64) ([]byte, Descriptor, error) {
	return r.manifest(ctx, ref, manifestAccept, limit)
}

func (r *Repo) manifest(ctx context.Context, ref, accept string, limit int64) ([]byte, Descriptor, error) {
	resp, err := r.do(ctx, http.MethodGet, "manifests", ref, accept, limit)
	if err != nil {
		return nil, Descriptor{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, Descriptor{}, statusError(resp)
	}
	mt := resp.Header.Get("Content-Type")
	b, err := readBody(resp, limit)
	if err != nil {
		return nil, Descriptor{}, err
	}
	d := Descriptor{MediaType: mt, Digest: Digest(b), Size: int64(len(b))}
	if strings.HasPrefix(ref, "sha256:") && d.Digest != ref {
		return nil, Descriptor{}, fmt.Errorf("manifest %s@%s hashes to %s: %w", r.repo.Name(), ref, d.Digest, ErrBadContent)
	}
	return b, d, nil
}

// Referrers lists the referrers of digest: the referrers API when the registry
// has it, else the sha256-<hex> fallback tag. supported says which answered. A
// missing fallback tag is an empty list, not an error.
func (r *Repo) Referrers(ctx context.Context, digest string, limit int64) (index []byte, supported bool, err error) {
	resp, err := r.do(ctx, http.MethodGet, "referrers", digest, OCIIndex, limit)
	if err != nil {
		return nil, false, err
	}
	switch {
	case resp.StatusCode == http.StatusOK && mediaTypeIs(resp.Header.Get("Content-Type"), OCIIndex):
		b, err := readBody(resp, limit)
		return b, true, err
	case resp.StatusCode == http.StatusOK, resp.StatusCode == http.StatusNotFound,
		resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusNotAcceptable,
		resp.StatusCode == http.StatusMethodNotAllowed:
		drain(resp) // no referrers API: use the fallback tag, as the OCI spec says
	default:
		return nil, false, statusError(resp)
	}
	b, _, err := r.manifest(ctx, FallbackTag(digest), OCIIndex, limit)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	return b, false, err
}

func mediaTypeIs(header, want string) bool {
	mt, _, _ := strings.Cut(header, ";")
	return strings.TrimSpace(mt) == want
}

// FallbackTag is the referrers tag schema's tag for digest: sha256-<hex>.
func FallbackTag(digest string) string { return strings.Replace(digest, ":", "-", 1) }

// SignatureTag is cosign's legacy signature tag for digest: sha256-<hex>.sig.
func SignatureTag(digest string) string { return FallbackTag(digest) + ".sig" }

// Blob fetches a blob whose descriptor says size bytes; sizes over limit are
// refused before any request, and the content must match digest and size.
func (r *Repo) Blob(ctx context.Context, digest string, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, fmt.Errorf("blob %s is %d bytes: %w (%d)", digest, size, ErrTooLarge, limit)
	}
	if !imageref.ValidDigest(digest) {
		return nil, fmt.Errorf("blob digest %q is not a sha256 digest: %w", digest, ErrBadContent)
	}
	resp, err := r.do(ctx, http.MethodGet, "blobs", digest, "", limit)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	b, err := readBody(resp, limit)
	if err != nil {
		return nil, err
	}
	if size >= 0 && int64(len(b)) != size {
		return nil, fmt.Errorf("blob %s is %d bytes, its descriptor says %d: %w", digest, len(b), size, ErrBadContent)
	}
	if got := Digest(b); got != digest {
		return nil, fmt.Errorf("blob %s hashes to %s: %w", digest, got, ErrBadContent)
	}
	return b, nil
}

// SizeString renders a byte count for messages.
func SizeString(n int64) string {
	if n >= 1<<20 {
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
