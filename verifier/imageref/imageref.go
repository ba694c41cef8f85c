// Package imageref parses a container image reference once into the one
// reference type the enforcer, the policy engine and the verifier share, with a
// canonical registry identity: two spellings of the same registry are the same
// string, so a pattern, a cache key or a credential lookup cannot be dodged by
// writing a host differently.
//
// Canonical registry (see docs/policy.md "Image references"):
//   - the host is lowercased (DNS is case-insensitive);
//   - the port loses leading zeros (127.0.0.1:05199 is 127.0.0.1:5199);
//   - the scheme's default port is dropped: :80 for loopback registries
//     (localhost, 127.0.0.0/8, ::1), which criguard and containerd speak plain
//     HTTP to, and :443 for every other registry (HTTPS);
//   - Docker Hub's aliases index.docker.io, registry-1.docker.io and docker.io
//     are all docker.io, and a one-component Hub path gets "library/";
//   - IPv6 literals are written in their shortest form, and an IPv4-mapped IPv6
//     literal is the IPv4 address.
//
// A host that cannot be made canonical is refused, not guessed: a zone in an
// IPv6 literal, a numeric host that is not a canonical dotted quad (127.1,
// 0177.0.0.1, 127.000.0.1, which some resolvers read as IP addresses), port 0
// or above 65535. Names that only DNS makes equal (localhost and 127.0.0.1)
// stay different; see docs/threat-model.md.
package imageref

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// DockerHub is Docker Hub's canonical registry name.
const DockerHub = "docker.io"

// MaxLength bounds a reference (kubelet sends what the pod spec says).
const MaxLength = 4096

// Ref is one parsed image reference. The zero Ref is invalid; get one from
// Parse. It is a small value: copy it freely.
type Ref struct {
	registry string // canonical registry: docker.io, 127.0.0.1:5199, [::1]:5000
	path     string // repository path: library/nginx
	written  string // the path as written, for Kyverno's spelling: nginx
	repo     string // registry/path, built once: every matcher and cache key asks for it
	tag      string // "latest" when neither tag nor digest was written
	digest   string // sha256:<64 hex> when written
}

// Parse parses a reference as Docker does (nginx is
// docker.io/library/nginx:latest; name:tag@digest keeps both) and makes its
// registry canonical. Whitespace, image IDs, digests other than sha256 and
// registries that cannot be made canonical are refused.
func Parse(s string) (Ref, error) {
	switch {
	case s == "":
		return Ref{}, fmt.Errorf("empty image reference")
	case len(s) > MaxLength:
		return Ref{}, fmt.Errorf("image reference of %d bytes is too long (at most %d)", len(s), MaxLength)
	case IsImageID(s):
		return Ref{}, fmt.Errorf("%q is an image ID, not a reference: the repository it was pulled from must be named", s)
	}
	base, digest, hasAt := strings.Cut(s, "@")
	var r Ref
	if hasAt {
		if err := CheckDigest(digest); err != nil {
			return Ref{}, fmt.Errorf("image reference %q: %w", s, err)
		}
		r.digest = digest
	}
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		base, r.tag = base[:i], base[i+1:]
		if !validTag(r.tag) {
			return Ref{}, fmt.Errorf("image reference %q: tag %q is not valid", s, r.tag)
		}
	}
	if r.tag == "" && r.digest == "" {
		r.tag = "latest"
	}
	host, path := splitDomain(base)
	reg, err := canonicalRegistry(host) // validated with the repository below
	if err != nil {
		return Ref{}, fmt.Errorf("image reference %q: %w", s, err)
	}
	r.registry, r.path, r.written = reg, path, path
	if reg == DockerHub && !strings.Contains(path, "/") {
		r.path = "library/" + path
	}
	r.repo = r.registry + "/" + r.path
	if _, err := name.NewRepository(r.repo, name.StrictValidation); err != nil {
		return Ref{}, fmt.Errorf("image reference %q is not valid: %w", s, err)
	}
	return r, nil
}

// validTag is Docker's tag grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func validTag(t string) bool {
	if t == "" || len(t) > 128 || t[0] == '.' || t[0] == '-' {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// splitDomain splits a name into registry and path as Docker does: the first
// component is a registry when it contains '.' or ':', is localhost, or has an
// upper-case letter (repository paths are lower case); else it is Docker Hub.
func splitDomain(s string) (host, path string) {
	i := strings.IndexByte(s, '/')
	if i == -1 || (!strings.ContainsAny(s[:i], ".:") && s[:i] != "localhost" && strings.ToLower(s[:i]) == s[:i]) {
		return DockerHub, s
	}
	return s[:i], s[i+1:]
}

// Registry is the canonical registry (host[:port]); docker.io for Docker Hub.
func (r Ref) Registry() string { return r.registry }

// Path is the repository path within the registry (library/nginx).
func (r Ref) Path() string { return r.path }

// Repository is registry/path (docker.io/library/nginx).
func (r Ref) Repository() string { return r.repo }

// Tag is the tag written, "latest" when neither tag nor digest was, "" when
// only a digest was.
func (r Ref) Tag() string { return r.tag }

// Digest is the digest the reference pins, "" when it pins none.
func (r Ref) Digest() string { return r.digest }

// HasDigest reports whether the reference pins a digest.
func (r Ref) HasDigest() bool { return r.digest != "" }

// IsZero reports whether r is the zero Ref (not parsed).
func (r Ref) IsZero() bool { return r.registry == "" }

// String is the canonical reference: repository[:tag][@digest].
func (r Ref) String() string {
	s := r.Repository()
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

// AtDigest is the same repository pinned to digest (the tag dropped), as a
// registry is asked for it.
func (r Ref) AtDigest(digest string) (Ref, error) {
	if err := CheckDigest(digest); err != nil {
		return Ref{}, err
	}
	r.tag, r.digest = "", digest
	return r, nil
}

// Spellings are the names an image pattern is matched against: Docker's
// canonical form (docker.io/library/nginx:latest) and Kyverno's form of the
// reference as written, which keeps a Hub path without "library/"
// (nginx -> docker.io/nginx:latest). Both end in ":tag", or in "@digest"
// without the tag when a digest is pinned, as Kyverno's ImageInfo.String does;
// both use the canonical registry. Outside Docker Hub they are one name.
func (r Ref) Spellings() []string {
	suffix := ":" + r.tag
	if r.digest != "" {
		suffix = "@" + r.digest
	}
	docker := r.Repository() + suffix
	if r.written == r.path {
		return []string{docker}
	}
	return []string{docker, r.registry + "/" + r.written + suffix}
}

// Name is the reference for go-containerregistry (which spells Docker Hub
// index.docker.io): a name.Digest when a digest is pinned, else a name.Tag.
func (r Ref) Name() (name.Reference, error) {
	if r.IsZero() {
		return nil, fmt.Errorf("no image reference")
	}
	if r.digest != "" {
		return name.NewDigest(r.Repository()+"@"+r.digest, name.StrictValidation)
	}
	return name.NewTag(r.Repository()+":"+r.tag, name.StrictValidation)
}

// NameRepository is the repository for go-containerregistry.
func (r Ref) NameRepository() (name.Repository, error) {
	return name.NewRepository(r.Repository(), name.StrictValidation)
}

// CheckDigest accepts only sha256:<64 lowercase hex>: the one digest form the
// verifier can judge (cosign signs sha256 manifest digests), so no other is let
// into a decision.
func CheckDigest(d string) error {
	if !ValidDigest(d) {
		return fmt.Errorf("%q is not an image digest (sha256:<64 lowercase hex>)", d)
	}
	return nil
}

// ValidDigest reports whether d is sha256:<64 lowercase hex>.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	return ok && isHex64(h)
}

// IsImageID reports whether s is an image ID (sha256:<64 hex>, or the bare hex)
// rather than a reference.
func IsImageID(s string) bool {
	return isHex64(strings.TrimPrefix(s, "sha256:"))
}

func isHex64(h string) bool {
	if len(h) != 64 {
		return false
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CanonicalRegistry returns the canonical form of a registry host[:port] (see
// the package comment), or an error when it cannot be made canonical.
func CanonicalRegistry(hostport string) (string, error) {
	out, err := canonicalRegistry(hostport)
	if err != nil {
		return "", err
	}
	if _, err := name.NewRegistry(out, name.StrictValidation); err != nil {
		return "", fmt.Errorf("registry %q is not valid: %w", hostport, err)
	}
	return out, nil
}

func canonicalRegistry(hostport string) (string, error) {
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("registry %q: %w", hostport, err)
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 32)
		if err != nil || n == 0 || n > 65535 || strings.Trim(port, "0123456789") != "" {
			return "", fmt.Errorf("registry %q: port %q is not a port number (1-65535)", hostport, port)
		}
		port = strconv.FormatUint(n, 10)
	}
	if strings.HasPrefix(host, "[") {
		host, err = canonicalIPv6(host)
	} else {
		host, err = canonicalHostname(host)
	}
	if err != nil {
		return "", fmt.Errorf("registry %q: %w", hostport, err)
	}
	switch host {
	case "index.docker.io", "registry-1.docker.io":
		host = DockerHub
	}
	if port == defaultPort(host) {
		port = ""
	}
	if port != "" {
		return host + ":" + port, nil
	}
	return host, nil
}

func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("unclosed IPv6 literal")
		}
		host, rest := s[:end+1], s[end+1:]
		if rest == "" {
			return host, "", nil
		}
		p, ok := strings.CutPrefix(rest, ":")
		if !ok || p == "" {
			return "", "", fmt.Errorf("text after the IPv6 literal is not a port")
		}
		return host, p, nil
	}
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort && port == "" {
		return "", "", fmt.Errorf("empty port")
	}
	if strings.Contains(port, ":") {
		return "", "", fmt.Errorf("an IPv6 address must be written in brackets")
	}
	return host, port, nil
}

func canonicalIPv6(bracketed string) (string, error) {
	inner := strings.TrimSuffix(strings.TrimPrefix(bracketed, "["), "]")
	if strings.Contains(inner, "%") {
		return "", fmt.Errorf("an IPv6 zone (%s) names an interface of one node, not a registry", inner)
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is6() {
		return "", fmt.Errorf("%q is not an IPv6 address", inner)
	}
	if a.Is4In6() {
		return a.Unmap().String(), nil
	}
	return "[" + a.String() + "]", nil
}

func canonicalHostname(h string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host")
	}
	h = strings.ToLower(h)
	if numericHost(h) {
		// Only the canonical dotted quad is an address here: resolvers differ on
		// 127.1, octal 0177.0.0.1 or 127.000.0.1, so their meaning is a guess.
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is4() || a.String() != h {
			return "", fmt.Errorf("%q is not a canonical IPv4 address (write it as four decimal numbers without leading zeros)", h)
		}
	}
	return h, nil
}

// numericHost reports hosts whose labels are all numbers (decimal, or 0x
// hex): addresses to some resolver, never DNS names (no top-level domain is
// numeric).
func numericHost(h string) bool {
	for rest, more := h, true; more; {
		var l string
		l, rest, more = strings.Cut(rest, ".")
		digits := "0123456789"
		if hex, ok := strings.CutPrefix(l, "0x"); ok {
			l, digits = hex, "0123456789abcdef"
		}
		if l == "" || strings.Trim(l, digits) != "" {
			return false
		}
	}
	return true
}

// defaultPort is the port a registry is reached on when none is written:
// loopback registries are spoken to over plain HTTP, all others over HTTPS.
func defaultPort(host string) string {
	if IsLoopback(host) {
		return "80"
	}
	return "443"
}

// IsLoopback reports registries spoken to over plain HTTP without a probe: the
// node's own loopback registries (an IP literal in 127.0.0.0/8 or ::1, or
// localhost). A DNS name merely starting with "127." is not one.
func IsLoopback(hostport string) bool {
	h := hostport
	if sh, _, err := splitHostPort(hostport); err == nil {
		h = sh
	}
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if h == "" || !strings.Contains(h, ":") && (h[0] < '0' || h[0] > '9') {
		return false // a DNS name: no address to parse
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// CanonicalPattern makes the registry part of an image pattern canonical, so
// that a pattern written for index.docker.io, an upper-case host or an explicit
// default port matches the canonical spellings. A registry part with wildcards
// is only lowercased; a pattern without a registry part (no '/', or a first
// component Docker reads as a Hub path) is returned as is.
func CanonicalPattern(p string) (string, error) {
	i := strings.IndexByte(p, '/')
	if i < 0 {
		return p, nil
	}
	host, rest := p[:i], p[i:]
	if strings.ContainsAny(host, "*?") {
		return strings.ToLower(host) + rest, nil
	}
	if h, _ := splitDomain(p); h == DockerHub && !strings.HasPrefix(p, DockerHub+"/") {
		return p, nil // "library/nginx": a Hub path, not a registry
	}
	reg, err := CanonicalRegistry(host)
	if err != nil {
		return "", err
	}
	return reg + rest, nil
}
