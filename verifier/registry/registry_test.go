package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.0.0.1": true, "localhost:5000": true, "[::1]:5000": true, "reg.localhost": true,
		"10.0.0.1:5000": false, "index.docker.io": false, "127.example.com": false, "localhost.example.com:443": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestTags(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	if FallbackTag(d) != "sha256-"+strings.Repeat("a", 64) || SignatureTag(d) != FallbackTag(d)+".sig" {
		t.Fatal(FallbackTag(d), SignatureTag(d))
	}
	for _, bad := range []string{"", "sha256:", "sha512:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63)} {
		if ValidDigest(bad) {
			t.Errorf("ValidDigest(%q)", bad)
		}
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
