package policy

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
)

// matchWildcard reports whether name matches pattern with Kyverno's wildcard
// semantics: '*' matches any run of characters (including '/' and none), '?'
// exactly one character, everything else itself; the whole name must match.
// Iterative with single-star backtracking: linear memory, no recursion, so a
// hostile pattern cannot blow the stack.
func matchWildcard(pattern, s string) bool {
	p, n := []rune(pattern), []rune(s)
	pi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// checkPattern refuses patterns that cannot mean what their author expects:
// empty ones, whitespace, and glob syntax Kyverno's wildcards do not have.
func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern (use \"*\" to match everything)")
	}
	for _, r := range p {
		switch {
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("pattern %q contains whitespace or a control character", p)
		case strings.ContainsRune("[]{}\\", r):
			return fmt.Errorf("pattern %q uses %q: only '*' and '?' are wildcards (no character classes, alternatives or escapes)", p, r)
		}
	}
	return nil
}

// imageRef is an image reference parsed once per evaluation.
type imageRef struct {
	ref        name.Reference
	normalized string // go-containerregistry's full name: index.docker.io/library/nginx:latest
	repository string // index.docker.io/library/nginx
	digest     string // the digest the reference pins, if any
	hasDigest  bool
	// spellings are the names patterns are matched against, see imageSpellings.
	spellings []string
}

// parseImage parses a reference as Docker does (nginx is
// index.docker.io/library/nginx:latest). "name:tag@digest" keeps the digest.
func parseImage(image string) (*imageRef, error) {
	if image == "" {
		return nil, fmt.Errorf("empty image reference")
	}
	if len(image) > 4096 {
		return nil, fmt.Errorf("image reference of %d bytes is too long", len(image))
	}
	// An image ID (sha256:<hex>, or bare hex) would parse as the Docker Hub
	// image "library/sha256" with a tag: refuse it, it names no repository.
	if validDigest(image) || (len(image) == 64 && strings.Trim(image, "0123456789abcdef") == "") {
		return nil, fmt.Errorf("%q is an image ID, not a reference: the repository it was pulled from must be named", image)
	}
	// go-containerregistry does not accept name:tag@digest; Docker and kubelet
	// do, and the digest is what identifies the content.
	base, dgst, hasAt := strings.Cut(image, "@")
	var ref name.Reference
	var err error
	if hasAt {
		repoPart := base
		if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
			repoPart = base[:i]
		}
		ref, err = name.NewDigest(repoPart+"@"+dgst, name.StrictValidation)
		if err != nil {
			// StrictValidation refuses implicit registries; retry the normal way.
			ref, err = name.NewDigest(repoPart + "@" + dgst)
		}
	} else {
		ref, err = name.ParseReference(image)
	}
	if err != nil {
		return nil, fmt.Errorf("image reference %q is not valid: %w", image, err)
	}
	r := &imageRef{ref: ref, normalized: ref.Name(), repository: ref.Context().Name()}
	if d, ok := ref.(name.Digest); ok {
		r.digest, r.hasDigest = d.DigestStr(), true
		if tag := tagOf(base); tag != "" && hasAt {
			r.normalized = ref.Context().Name() + ":" + tag + "@" + r.digest
		}
	}
	r.spellings = imageSpellings(image, ref)
	return r, nil
}

func tagOf(base string) string {
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		return base[i+1:]
	}
	return ""
}

// imageSpellings returns the names an image pattern is matched against:
//   - Docker's familiar full form with "docker.io" as the Hub's registry
//     (docker.io/library/nginx:latest), and
//   - Kyverno's form of the reference as written: the registry docker.io added
//     when the first component is not a host, without "library/" (nginx ->
//     docker.io/nginx:latest, library/nginx -> docker.io/library/nginx:latest).
//
// Both end in ":tag", or in "@digest" (without the tag) when a digest is given,
// as Kyverno's ImageInfo.String does. Outside Docker Hub both are the same.
func imageSpellings(image string, ref name.Reference) []string {
	suffix := func() string {
		if d, ok := ref.(name.Digest); ok {
			return "@" + d.DigestStr()
		}
		return ":" + ref.Identifier()
	}()
	reg := ref.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	docker := reg + "/" + ref.Context().RepositoryStr() + suffix

	// Kyverno's spelling keeps the path as written.
	base, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		base = base[:i]
	}
	if i := strings.IndexByte(base, '/'); i == -1 || (!strings.ContainsAny(base[:i], ".:") && base[:i] != "localhost" && strings.ToLower(base[:i]) == base[:i]) {
		base = "docker.io/" + base
	}
	kyverno := base + suffix
	if kyverno == docker {
		return []string{docker}
	}
	return []string{docker, kyverno}
}

// matchesImage: an include pattern list matches when any pattern matches any
// spelling (more rules apply); an exclude list matches only when one pattern
// matches every spelling (an exclusion never applies on a technicality of how
// the pod spelled the name).
func (r *imageRef) matchesAny(patterns []string) bool {
	for _, p := range patterns {
		for _, s := range r.spellings {
			if matchWildcard(p, s) {
				return true
			}
		}
	}
	return false
}

func (r *imageRef) excludedBy(patterns []string) bool {
	for _, p := range patterns {
		all := true
		for _, s := range r.spellings {
			if !matchWildcard(p, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
