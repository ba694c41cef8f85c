package harness

// Hostile and faulty registries for criguard's fault tests (e2e/faults_test.go,
// e2e/hostile_test.go, e2e/security_test.go).
//
//	h := harness.StartHostileRegistry(t)   // misbehaves per repository, plain HTTP on 127.0.0.1
//	h.Ref(repo, tag) string                // "127.0.0.1:PORT/<repo>:<tag>"; repos:
//	    HostileSlow        every response written one byte per h.SlowDelay (default 2s), headers included
//	    HostileHang        accepts the request and never answers
//	    HostileRedirect    307 to a new URL of itself, forever
//	    HostileHugeManifest  HEAD without a digest, GET streams a 1 GiB manifest (chunked, no length)
//	    HostileHugeSignature a normal HEAD; referrers and the .sig tag stream 1 GiB (chunked / declared length)
//	    HostileHangSignature a normal HEAD; every signature lookup never answers
//	    HostileSlowSignature a normal HEAD; every signature lookup answers one byte per h.SlowDelay
//	    HostileHugeHeaders   every response carries 1 GiB of headers (streamed until the client hangs up)
//	    HostileAuthFlood     every request answered 401 (Basic challenge); with h.PingFlood set, so is /v2/,
//	                         with an endless body (clients drain a ping's body to reuse the connection)
//	    HostileSignatures(n) a normal HEAD; n bundle referrers and an n-layer .sig manifest, generated lazily
//	h.Requests(repo) int, h.BytesSent(repo) int64  // what criguard asked for and was sent
//	h.Digest(repo, tag) string                     // the digest HEAD answers for repo:tag
//
//	f := harness.StartFrontRegistry(t, r)  // a reverse proxy in front of a Registry, on its own port
//	f.Host, f.Ref(repo, tagOrDigest)
//	f.AddTo(t, c)                           // certs.d hosts.toml so containerd c pulls through it
//	f.SetDown(t, true|false)                // listener closed (connection refused) / open again, same port
//	f.RequireAuth(user, password, token)    // Basic user:password or Bearer token required; "" turns it off
//	f.RequireTokenAuth(user, password, identityToken) (issued string) // the token flow of most registries:
//	                                        // Bearer challenge, realm /token on the front itself
//	f.DelayBlobs(d, digests...) <-chan string // GETs of those blobs wait d; each such request is announced
//	f.RedirectBlobs(host)                   // blob GETs answered 307 to host (a CDN, say)
//	f.SplitView(repo, tag, agent, digest) func() int // clients whose User-Agent has agent see tag as digest
//	f.FailSignatureLookups(bool)            // referrers, fallback and .sig tags answer 503; images served as usual
//	f.Requests() int, f.AuthFailures() int, f.SeenAuthorization() []string
//
// Nothing here allocates what it streams: the 1 GiB bodies come from one small
// buffer written again and again, and stop when the client hangs up.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Hostile repositories (see StartHostileRegistry).
const (
	HostileSlow          = "hostile/slow"
	HostileHang          = "hostile/hang"
	HostileRedirect      = "hostile/redirect"
	HostileHugeManifest  = "hostile/huge-manifest"
	HostileHugeSignature = "hostile/huge-signature"
	HostileHangSignature = "hostile/hang-signature"
	HostileSlowSignature = "hostile/slow-signature"
	HostileHugeHeaders   = "hostile/huge-headers"
	HostileAuthFlood     = "hostile/auth-flood"
	hostileSigsPrefix    = "hostile/sigs-"
	hostileHugeSize      = 1 << 30
	ociManifest          = "application/vnd.oci.image.manifest.v1+json"
	ociIndex             = "application/vnd.oci.image.index.v1+json"
	sigstoreBundleType   = "application/vnd.dev.sigstore.bundle.v0.3+json"
)

// HostileSignatures is the repository whose image carries n signatures.
func HostileSignatures(n int) string { return fmt.Sprintf("%s%d", hostileSigsPrefix, n) }

// HostileRegistry misbehaves per repository; see the constants.
type HostileRegistry struct {
	Host string
	// SlowDelay is the pause between bytes of HostileSlow's responses.
	SlowDelay time.Duration
	// PingFlood makes /v2/ answer 401 with an endless body (see HostileAuthFlood).
	PingFlood atomic.Bool

	srv  *http.Server
	done chan struct{}

	mu       sync.Mutex
	requests map[string]int
	sent     map[string]*atomic.Int64
	hijacked map[net.Conn]struct{}
}

// StartHostileRegistry serves the hostile repositories on a free 127.0.0.1
// port until the test ends.
func StartHostileRegistry(t T) *HostileRegistry {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: hostile registry listen: %v", err)
	}
	h := &HostileRegistry{
		Host:      l.Addr().String(),
		SlowDelay: 2 * time.Second,
		done:      make(chan struct{}),
		requests:  map[string]int{},
		sent:      map[string]*atomic.Int64{},
		hijacked:  map[net.Conn]struct{}{},
	}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(l) }()
	t.Cleanup(func() {
		close(h.done)
		_ = h.srv.Close()
		h.mu.Lock()
		for c := range h.hijacked {
			_ = c.Close()
		}
		h.mu.Unlock()
	})
	return h
}

// Ref names repo:tag in the hostile registry.
func (h *HostileRegistry) Ref(repo, tag string) string { return h.Host + "/" + repo + ":" + tag }

// Requests is how many requests reached repo.
func (h *HostileRegistry) Requests(repo string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests[repo]
}

// BytesSent is how many body bytes repo's responses got onto the wire.
func (h *HostileRegistry) BytesSent(repo string) int64 { return h.counter(repo).Load() }

func (h *HostileRegistry) counter(repo string) *atomic.Int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.sent[repo]
	if c == nil {
		c = new(atomic.Int64)
		h.sent[repo] = c
	}
	return c
}

// Digest is the manifest digest HEAD answers for repo:tag (each tag its own,
// so concurrent verifications of several tags share nothing).
func (h *HostileRegistry) Digest(repo, tag string) string {
	s := sha256.Sum256([]byte("criguard hostile image " + repo + ":" + tag))
	return "sha256:" + hex.EncodeToString(s[:])
}

// splitV2 splits /v2/<repo>/<kind>/<ref> at the last kind segment.
func splitV2(p string) (repo, kind, ref string, ok bool) {
	p, ok = strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", "", false
	}
	for _, k := range []string{"/manifests/", "/blobs/", "/referrers/"} {
		if i := strings.LastIndex(p, k); i > 0 {
			return p[:i], strings.Trim(k, "/"), p[i+len(k):], true
		}
	}
	return "", "", "", false
}

func (h *HostileRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		if h.PingFlood.Load() {
			h.mu.Lock()
			h.requests["/v2/"]++
			h.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="criguard-hostile"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			stream(w, h.counter("/v2/"), "", strings.Repeat(" ", 64), -1)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
		return
	}
	repo, kind, ref, ok := splitV2(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	h.mu.Lock()
	h.requests[repo]++
	h.mu.Unlock()
	sent := h.counter(repo)
	switch {
	case repo == HostileSlow:
		h.dribble(w, sent, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nDocker-Content-Digest: %s\r\nContent-Length: 2\r\n\r\n{}", ociManifest, h.Digest(repo, ref)))
	case repo == HostileHang:
		h.hang(w)
	case repo == HostileHugeHeaders:
		h.hugeHeaders(w, sent)
	case repo == HostileAuthFlood:
		w.Header().Set("WWW-Authenticate", `Basic realm="criguard-hostile"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
	case repo == HostileRedirect:
		n, _ := strconv.Atoi(r.URL.Query().Get("r"))
		u := *r.URL
		u.RawQuery = "r=" + strconv.Itoa(n+1)
		http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	case repo == HostileHugeManifest && kind == "manifests":
		w.Header().Set("Content-Type", ociManifest)
		if r.Method == http.MethodHead {
			return // no digest: the client has to GET and hash it
		}
		stream(w, sent, `{"schemaVersion":2,"mediaType":"`+ociManifest+`","layers":[`, ` {"mediaType":"application/octet-stream","size":1,"digest":"sha256:`+strings.Repeat("0", 64)+`"},`, -1)
	case (repo == HostileHangSignature || repo == HostileSlowSignature) && kind == "manifests" && h.headManifest(w, r, repo, ref):
	case repo == HostileHangSignature:
		h.hang(w)
	case repo == HostileSlowSignature:
		h.dribble(w, sent, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: 2\r\n\r\n{}", ociIndex))
	case repo == HostileHugeSignature:
		h.hugeSignature(w, r, repo, kind, ref, sent)
	case strings.HasPrefix(repo, hostileSigsPrefix):
		n, err := strconv.Atoi(strings.TrimPrefix(repo, hostileSigsPrefix))
		if err != nil || n < 0 || n > 1_000_000 {
			http.NotFound(w, r)
			return
		}
		h.manySignatures(w, r, repo, kind, ref, n, sent)
	default:
		http.NotFound(w, r)
	}
}

// headManifest answers a tag with its digest (and a digest with itself).
func (h *HostileRegistry) headManifest(w http.ResponseWriter, r *http.Request, repo, ref string) bool {
	if strings.HasPrefix(ref, "sha256-") { // a signature or fallback tag
		return false
	}
	dg := ref
	if !strings.HasPrefix(ref, "sha256:") {
		dg = h.Digest(repo, ref)
	}
	body := `{"schemaVersion":2,"mediaType":"` + ociManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}`
	w.Header().Set("Content-Type", ociManifest)
	w.Header().Set("Docker-Content-Digest", dg)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
	return true
}

func (h *HostileRegistry) hugeSignature(w http.ResponseWriter, r *http.Request, repo, kind, ref string, sent *atomic.Int64) {
	switch {
	case kind == "manifests" && h.headManifest(w, r, repo, ref):
	case kind == "referrers":
		w.Header().Set("Content-Type", ociIndex)
		stream(w, sent, `{"schemaVersion":2,"mediaType":"`+ociIndex+`","manifests":[`,
			` {"mediaType":"`+ociManifest+`","artifactType":"`+sigstoreBundleType+`","size":1000,"digest":"sha256:`+strings.Repeat("1", 64)+`"},`, -1)
	case kind == "manifests" && strings.HasSuffix(ref, ".sig"):
		// A declared length: a careful client refuses it without reading.
		w.Header().Set("Content-Type", ociManifest)
		w.Header().Set("Content-Length", strconv.Itoa(hostileHugeSize))
		stream(w, sent, `{"schemaVersion":2,"mediaType":"`+ociManifest+`","layers":[`,
			` {"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":1,"digest":"sha256:`+strings.Repeat("2", 64)+`"},`, hostileHugeSize)
	default:
		http.NotFound(w, r)
	}
}

// manySignatures serves n bundle referrers and an n-layer legacy .sig
// manifest, each generated as it is written. Their blobs and manifests do not
// exist: a verifier that reads them all makes n requests, which Requests shows.
func (h *HostileRegistry) manySignatures(w http.ResponseWriter, r *http.Request, repo, kind, ref string, n int, sent *atomic.Int64) {
	desc := func(i int, mediaType, extra string) string {
		s := sha256.Sum256([]byte(repo + strconv.Itoa(i) + mediaType))
		return fmt.Sprintf(`{"mediaType":%q,%s"size":%d,"digest":"sha256:%s"}`, mediaType, extra, 900+i%100, hex.EncodeToString(s[:]))
	}
	switch {
	case kind == "manifests" && h.headManifest(w, r, repo, ref):
	case kind == "referrers":
		w.Header().Set("Content-Type", ociIndex)
		cw := &countingWriter{w: w, n: sent}
		_, _ = fmt.Fprintf(cw, `{"schemaVersion":2,"mediaType":"%s","manifests":[`, ociIndex)
		for i := 0; i < n; i++ {
			sep := ","
			if i == n-1 {
				sep = ""
			}
			if _, err := fmt.Fprint(cw, desc(i, ociManifest, `"artifactType":"`+sigstoreBundleType+`",`)+sep); err != nil {
				return
			}
		}
		_, _ = fmt.Fprint(cw, "]}")
	case kind == "manifests" && strings.HasPrefix(ref, "sha256-") && strings.HasSuffix(ref, ".sig"):
		w.Header().Set("Content-Type", ociManifest)
		cw := &countingWriter{w: w, n: sent}
		_, _ = fmt.Fprintf(cw, `{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[`, ociManifest)
		sig := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 70)))
		for i := 0; i < n; i++ {
			sep := ","
			if i == n-1 {
				sep = ""
			}
			if _, err := fmt.Fprint(cw, desc(i, "application/vnd.dev.cosign.simplesigning.v1+json", `"annotations":{"dev.cosignproject.cosign/signature":"`+sig+`"},`)+sep); err != nil {
				return
			}
		}
		_, _ = fmt.Fprint(cw, "]}")
	default:
		http.NotFound(w, r)
	}
}

type countingWriter struct {
	w http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// stream writes prefix, then item again and again, up to total bytes (-1:
// hostileHugeSize, chunked), from one small buffer; it stops when the client
// goes away.
func stream(w http.ResponseWriter, sent *atomic.Int64, prefix, item string, total int64) {
	if total < 0 {
		total = hostileHugeSize
	}
	buf := []byte(strings.Repeat(item, 32<<10/len(item)+1))
	n, err := w.Write([]byte(prefix))
	sent.Add(int64(n))
	written := int64(n)
	for err == nil && written < total {
		chunk := buf
		if rest := total - written; rest < int64(len(chunk)) {
			chunk = chunk[:rest]
		}
		n, err = w.Write(chunk)
		sent.Add(int64(n))
		written += int64(n)
	}
}

func (h *HostileRegistry) hijack(w http.ResponseWriter) net.Conn {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return nil
	}
	h.mu.Lock()
	h.hijacked[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *HostileRegistry) release(c net.Conn) {
	_ = c.Close()
	h.mu.Lock()
	delete(h.hijacked, c)
	h.mu.Unlock()
}

// dribble writes a whole raw HTTP response one byte per SlowDelay.
func (h *HostileRegistry) dribble(w http.ResponseWriter, sent *atomic.Int64, raw string) {
	c := h.hijack(w)
	if c == nil {
		return
	}
	defer h.release(c)
	t := time.NewTicker(h.SlowDelay)
	defer t.Stop()
	for i := 0; i < len(raw); i++ {
		if _, err := c.Write([]byte{raw[i]}); err != nil {
			return
		}
		sent.Add(1)
		select {
		case <-h.done:
			return
		case <-t.C:
		}
	}
}

// hugeHeaders answers with a status line and then header lines, 1 GiB of
// them, written as fast as the client reads.
func (h *HostileRegistry) hugeHeaders(w http.ResponseWriter, sent *atomic.Int64) {
	c := h.hijack(w)
	if c == nil {
		return
	}
	defer h.release(c)
	if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: " + ociManifest + "\r\n")); err != nil {
		return
	}
	var buf []byte
	for i := 0; len(buf) < 32<<10; i++ {
		buf = fmt.Appendf(buf, "X-Hostile-%d: %s\r\n", i, strings.Repeat("h", 200))
	}
	for written := 0; written < hostileHugeSize; written += len(buf) {
		n, err := c.Write(buf)
		sent.Add(int64(n))
		if err != nil {
			return
		}
		select {
		case <-h.done:
			return
		default:
		}
	}
}

// hang holds the connection without a byte until the client or the test ends.
func (h *HostileRegistry) hang(w http.ResponseWriter) {
	c := h.hijack(w)
	if c == nil {
		return
	}
	defer h.release(c)
	gone := make(chan struct{})
	go func() {
		b := make([]byte, 512)
		for {
			if _, err := c.Read(b); err != nil {
				close(gone)
				return
			}
		}
	}()
	select {
	case <-gone:
	case <-h.done:
	}
}

// FrontRegistry is a reverse proxy on its own 127.0.0.1 port in front of a
// Registry, that can go down, require credentials and slow down blobs.
type FrontRegistry struct {
	Host string

	backend *url.URL
	proxy   *httputil.ReverseProxy

	mu       sync.Mutex
	srv      *http.Server
	user     string
	password string
	token    string
	// token flow (RequireTokenAuth): the realm at /token issues issued for
	// Basic user:password, or for identity as a refresh token.
	tokenFlow bool
	identity  string
	issued    string
	delay     time.Duration
	delayed   map[string]bool
	notify    chan string
	requests  int
	authFail  int
	closed    bool
	seenAuth  map[string]bool // Authorization header values received
	blobsTo   string          // RedirectBlobs: host blob GETs are redirected to
	// SplitView: manifest requests for splitPath from a client whose
	// User-Agent contains splitAgent are answered for splitDigest instead.
	splitPath, splitAgent, splitDigest string
	splitHits                          int
	failSigs                           bool // FailSignatureLookups
}

// StartFrontRegistry serves a proxy to r until the test ends.
func StartFrontRegistry(t T, r *Registry) *FrontRegistry {
	t.Helper()
	backend := &url.URL{Scheme: "http", Host: r.Host}
	f := &FrontRegistry{backend: backend, proxy: httputil.NewSingleHostReverseProxy(backend)}
	// The backend going away mid-test is expected; its errors are answered
	// 502 to the client and need no log line.
	f.proxy.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: front registry listen: %v", err)
	}
	f.Host = l.Addr().String()
	f.serveOn(l)
	t.Cleanup(func() {
		f.mu.Lock()
		f.closed = true
		srv := f.srv
		f.srv = nil
		f.mu.Unlock()
		if srv != nil {
			_ = srv.Close()
		}
	})
	return f
}

func (f *FrontRegistry) serveOn(l net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 10 * time.Second}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// Ref names repo in the front registry; tagOrDigest is a tag or "sha256:...".
func (f *FrontRegistry) Ref(repo, tagOrDigest string) string {
	if strings.Contains(tagOrDigest, ":") {
		return f.Host + "/" + repo + "@" + tagOrDigest
	}
	return f.Host + "/" + repo + ":" + tagOrDigest
}

// AddTo lets containerd c pull from the front registry over plain HTTP (a
// certs.d hosts.toml; containerd reads it at each pull).
func (f *FrontRegistry) AddTo(t T, c *Containerd) {
	t.Helper()
	dir := filepath.Join(c.Dir, "certs.d", f.Host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", f.Host, f.Host)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
}

// SetDown closes the listener and every connection (clients get connection
// refused), or listens again on the same port.
func (f *FrontRegistry) SetDown(t T, down bool) {
	t.Helper()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	srv := f.srv
	if down {
		f.srv = nil
	}
	f.mu.Unlock()
	switch {
	case down && srv != nil:
		_ = srv.Close()
	case !down && srv == nil:
		var l net.Listener
		Eventually(t, 10*time.Second, "front registry listening again on "+f.Host, func() error {
			var err error
			l, err = net.Listen("tcp", f.Host)
			return err
		})
		f.serveOn(l)
	}
}

// RequireAuth makes every /v2/ request need Basic user:password or, when
// token is set, Bearer token. All empty turns the check off.
func (f *FrontRegistry) RequireAuth(user, password, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.user, f.password, f.token = user, password, token
	f.tokenFlow = false
}

// RequireTokenAuth switches to the flow most registries use: /v2/ requests
// need "Bearer <issued>", and a 401 names the front's own /token endpoint as the
// realm, which hands out issued for Basic user:password (GET) or for a POSTed
// password grant or identityToken refresh token. It returns issued, a secret
// too.
func (f *FrontRegistry) RequireTokenAuth(user, password, identityToken string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.user, f.password, f.token = user, password, ""
	f.tokenFlow, f.identity, f.issued = true, identityToken, "issued-"+hex.EncodeToString(b)
	return f.issued
}

// serveToken is the token endpoint of RequireTokenAuth.
func (f *FrontRegistry) serveToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	user, password, identity, issued := f.user, f.password, f.identity, f.issued
	f.mu.Unlock()
	ok := false
	if u, p, basic := r.BasicAuth(); basic && u == user && p == password {
		ok = true
	}
	if r.Method == http.MethodPost && r.ParseForm() == nil {
		switch r.PostForm.Get("grant_type") {
		case "password":
			ok = ok || (r.PostForm.Get("username") == user && r.PostForm.Get("password") == password)
		case "refresh_token":
			ok = ok || (identity != "" && r.PostForm.Get("refresh_token") == identity)
		}
	}
	if !ok {
		f.mu.Lock()
		f.authFail++
		f.mu.Unlock()
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300}`, issued, issued)
}

// DelayBlobs makes GETs of the given blob digests wait d before they are
// served, and announces each such request on the returned channel (dropped
// when nobody listens). A zero d turns it off.
func (f *FrontRegistry) DelayBlobs(d time.Duration, digests ...string) <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
	f.delayed = map[string]bool{}
	for _, dg := range digests {
		f.delayed[dg] = true
	}
	f.notify = make(chan string, 16)
	return f.notify
}

// Requests is how many requests the front registry received.
func (f *FrontRegistry) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// RedirectBlobs answers every blob GET with a 307 to the same path on host
// (another front registry: a CDN or object store), as large registries do.
// "" turns it off.
func (f *FrontRegistry) RedirectBlobs(host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobsTo = host
}

// SplitView answers manifest requests for repo:tag from clients whose
// User-Agent contains agent (say "containerd") with the manifest of digest
// instead, while everyone else gets what the tag names: a registry showing
// the verifier one image and the runtime another. It returns a func reporting
// how many requests got the other view.
func (f *FrontRegistry) SplitView(repo, tag, agent, digest string) func() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.splitPath, f.splitAgent, f.splitDigest = "/v2/"+repo+"/manifests/"+tag, agent, digest
	return func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.splitHits
	}
}

// FailSignatureLookups answers every signature lookup (referrers API,
// sha256-<hex> fallback and .sig tags) 503 while fail is true; images are
// served as usual: a registry whose signature store is broken, or one that
// hides signatures from the verifier on purpose.
func (f *FrontRegistry) FailSignatureLookups(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failSigs = fail
}

// SeenAuthorization lists every distinct Authorization header value the front
// registry received (credentials sent to it, rightly or not).
func (f *FrontRegistry) SeenAuthorization() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.seenAuth {
		out = append(out, a)
	}
	return out
}

// AuthFailures is how many requests it refused for missing or wrong credentials.
func (f *FrontRegistry) AuthFailures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authFail
}

func (f *FrontRegistry) authorized(r *http.Request) bool {
	if f.tokenFlow {
		return r.Header.Get("Authorization") == "Bearer "+f.issued
	}
	if f.user == "" && f.token == "" {
		return true
	}
	if u, p, ok := r.BasicAuth(); ok && f.user != "" && u == f.user && p == f.password {
		return true
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && f.token != "" && tok == f.token {
		return true
	}
	return false
}

func (f *FrontRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if a := r.Header.Get("Authorization"); a != "" {
		f.mu.Lock()
		if f.seenAuth == nil {
			f.seenAuth = map[string]bool{}
		}
		f.seenAuth[a] = true
		f.mu.Unlock()
	}
	if r.URL.Path == "/token" {
		f.serveToken(w, r)
		return
	}
	f.mu.Lock()
	f.requests++
	ok := f.authorized(r)
	if !ok {
		f.authFail++
	}
	delay, notify := time.Duration(0), f.notify
	if _, kind, ref, isV2 := splitV2(r.URL.Path); isV2 && kind == "blobs" && r.Method == http.MethodGet && f.delayed[ref] {
		delay = f.delay
	}
	tokenFlow := f.tokenFlow
	f.mu.Unlock()
	if !ok {
		if tokenFlow {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="%s"`, f.Host, f.Host))
		} else {
			w.Header().Set("WWW-Authenticate", `Basic realm="criguard-e2e"`)
		}
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	failSigs := f.failSigs
	f.mu.Unlock()
	if _, kind, ref, isV2 := splitV2(r.URL.Path); isV2 && failSigs && (kind == "referrers" || strings.HasPrefix(ref, "sha256-")) {
		http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"signature store down"}]}`, http.StatusServiceUnavailable)
		return
	}
	f.mu.Lock()
	blobsTo := f.blobsTo
	if f.splitPath != "" && r.URL.Path == f.splitPath && strings.Contains(r.UserAgent(), f.splitAgent) {
		f.splitHits++
		r.URL.Path = strings.TrimSuffix(f.splitPath, path.Base(f.splitPath)) + f.splitDigest
		r.URL.RawPath = ""
	}
	f.mu.Unlock()
	if _, kind, _, isV2 := splitV2(r.URL.Path); isV2 && kind == "blobs" && r.Method == http.MethodGet && blobsTo != "" {
		http.Redirect(w, r, "http://"+blobsTo+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		return
	}
	if delay > 0 {
		select {
		case notify <- r.URL.Path:
		default:
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	// The backend is an in-memory registry with no auth of its own.
	r.Header.Del("Authorization")
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}
