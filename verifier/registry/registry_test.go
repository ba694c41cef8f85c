package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func TestTags(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	if FallbackTag(d) != "sha256-"+strings.Repeat("a", 64) || SignatureTag(d) != FallbackTag(d)+".sig" {
		t.Fatal(FallbackTag(d), SignatureTag(d))
	}
}

// fixed answers every request with one response and counts requests.
type fixed struct {
	n    int
	code int
	body string
	cl   int64
}

func (f *fixed) RoundTrip(r *http.Request) (*http.Response, error) {
	f.n++
	return &http.Response{Request: r, StatusCode: f.code, Header: http.Header{}, ContentLength: f.cl, Body: io.NopCloser(strings.NewReader(f.body))}, nil
}

func TestBoundsAndDigests(t *testing.T) {
	repo, _ := name.NewRepository("127.0.0.1:5000/x/y")
	d := Digest([]byte("hello"))
	cases := []struct {
		name  string
		rt    *fixed
		call  func(r *Repo) error
		want  error
		trips int
	}{
		{"blob over the limit: no request", &fixed{code: 200, body: "hello", cl: 5}, func(r *Repo) error {
			_, err := r.Blob(context.Background(), d, 5, 4)
			return err
		}, ErrTooLarge, 0},
		{"blob matching", &fixed{code: 200, body: "hello", cl: 5}, func(r *Repo) error {
			_, err := r.Blob(context.Background(), d, 5, 10)
			return err
		}, nil, 1},
		{"blob with other bytes", &fixed{code: 200, body: "hellO", cl: 5}, func(r *Repo) error {
			_, err := r.Blob(context.Background(), d, 5, 10)
			return err
		}, ErrBadContent, 1},
		{"declared length over the limit", &fixed{code: 200, body: "", cl: 1 << 30}, func(r *Repo) error {
			_, _, err := r.Manifest(context.Background(), "v1", 1<<20)
			return err
		}, ErrTooLarge, 1},
		{"undeclared length over the limit", &fixed{code: 200, body: strings.Repeat("x", 11), cl: -1}, func(r *Repo) error {
			_, _, err := r.Manifest(context.Background(), "v1", 10)
			return err
		}, ErrTooLarge, 1},
		{"manifest by digest with other bytes", &fixed{code: 200, body: "hellO", cl: 5}, func(r *Repo) error {
			_, _, err := r.Manifest(context.Background(), d, 10)
			return err
		}, ErrBadContent, 1},
		{"404", &fixed{code: 404, cl: 0}, func(r *Repo) error {
			_, _, err := r.Manifest(context.Background(), "v1", 10)
			return err
		}, ErrNotFound, 1},
		{"missing fallback tag: empty list", &fixed{code: 404, cl: 0}, func(r *Repo) error {
			b, supported, err := r.Referrers(context.Background(), d, 10)
			if b != nil || supported {
				return errors.New("a list from nowhere")
			}
			return err
		}, nil, 2},
	}
	for _, c := range cases {
		r := New(c.rt).Repo(repo, nil)
		err := c.call(r)
		if (c.want == nil && err != nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		if c.rt.n != c.trips {
			t.Errorf("%s: %d requests, want %d", c.name, c.rt.n, c.trips)
		}
	}
}

func TestHeadWithoutHEADSupport(t *testing.T) {
	repo, _ := name.NewRepository("127.0.0.1:5000/x/y")
	rt := &seq{resps: []*fixed{{code: http.StatusMethodNotAllowed, cl: 0}, {code: 200, body: "hello", cl: 5}}}
	d, err := New(rt).Repo(repo, nil).Head(context.Background(), "v1", 100)
	if err != nil || d.Digest != Digest([]byte("hello")) {
		t.Fatalf("Head = %+v, %v", d, err)
	}
}

// seq answers with each response in turn.
type seq struct{ resps []*fixed }

func (s *seq) RoundTrip(r *http.Request) (*http.Response, error) {
	f := s.resps[0]
	s.resps = s.resps[1:]
	return f.RoundTrip(r)
}

// endless is a body that never ends (until 256 MiB, so that a reader without a
// bound still finishes), counting what was read of it.
type endless struct{ read *atomic.Int64 }

func (e endless) Read(p []byte) (int, error) {
	if e.read.Load() >= 256<<20 {
		return 0, io.EOF
	}
	e.read.Add(int64(len(p)))
	return len(p), nil
}

func (endless) Close() error { return nil }

// pingFlood answers /v2/ (the ping every client sends before authenticating)
// with code and an endless body, counted in pinged; every other request with
// other and a short body.
type pingFlood struct {
	code, other int
	pinged      atomic.Int64
}

func (f *pingFlood) RoundTrip(r *http.Request) (*http.Response, error) {
	h := http.Header{}
	h.Set("WWW-Authenticate", `Basic realm="test"`)
	if r.URL.Path == "/v2/" {
		return &http.Response{Request: r, StatusCode: f.code, Header: h, ContentLength: -1, Body: endless{&f.pinged}}, nil
	}
	return &http.Response{Request: r, StatusCode: f.other, Header: h, ContentLength: 2, Body: io.NopCloser(strings.NewReader("{}"))}, nil
}

// Bodies go-containerregistry reads itself (it drains a ping's answer to reuse
// the connection) are bounded too: an endless one is not read to the deadline.
func TestEveryBodyBounded(t *testing.T) {
	cases := []struct {
		name string
		repo string
		rt   *pingFlood
		want error
	}{
		// After the anonymous 401, the auth handshake pings /v2/.
		{"401 ping with an endless body", "127.0.0.1:5000/x/y", &pingFlood{code: 401, other: 401}, nil},
		// A private address is pinged to choose between https and http.
		{"200 ping of a private registry with an endless body", "10.0.0.1:5000/x/y", &pingFlood{code: 200, other: 404}, ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo, err := name.NewRepository(c.repo)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _, err = New(c.rt).Repo(repo, authn.FromConfig(authn.AuthConfig{Username: "u", Password: "p"})).Manifest(ctx, "v1", 1<<20)
			if err == nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("Manifest: %v, want an error (%v)", err, c.want)
			}
			// Both schemes may be pinged, each bounded.
			if n := c.rt.pinged.Load(); n > 2*MaxBody+64<<10 {
				t.Errorf("read %d bytes of the ping's answer; want at most MaxBody (%d) per ping", n, MaxBody)
			}
		})
	}
}

// A bounded body is read whole up to its limit; one byte more is ErrTooLarge,
// never a silent truncation.
func TestBoundedBody(t *testing.T) {
	const limit = 10
	for _, c := range []struct {
		size int
		want error
	}{{0, nil}, {9, nil}, {limit, nil}, {limit + 1, ErrTooLarge}, {1 << 20, ErrTooLarge}} {
		req, _ := http.NewRequestWithContext(context.WithValue(context.Background(), bodyLimitKey{}, int64(limit)), http.MethodGet, "http://r/v2/", nil)
		resp, err := (&boundedTransport{base: &fixed{code: 200, body: strings.Repeat("x", c.size), cl: -1}}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if !errors.Is(err, c.want) || c.want == nil && len(b) != c.size || len(b) > limit {
			t.Errorf("%d-byte body, limit %d: read %d bytes, %v; want %v", c.size, limit, len(b), err, c.want)
		}
	}
}
