package enforce

import (
	"slices"
	"sync"
	"time"

	"github.com/criguard/criguard/verifier/imageref"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageNames remembers, per image ID, the names containerd knows an image by
// (repository tags and digests), so that kubelet's CreateContainer, which names
// the image by its ID, needs no ImageStatus round trip when the image was judged
// moments ago. Sound because an image ID is a content digest: the same ID is the
// same configuration and layers, whatever names it has gained or lost since. The
// enforcer uses an entry only to allow, and only when the name the request claims
// is among the remembered ones; anything else is looked up afresh.
type imageNames struct {
	mu      sync.Mutex
	ttl     time.Duration
	max     int
	entries map[string]imageNamesEntry
}

type imageNamesEntry struct {
	img     *knownImage
	expires time.Time
}

func newImageNames(ttl time.Duration, max int) *imageNames {
	return &imageNames{ttl: ttl, max: max, entries: make(map[string]imageNamesEntry)}
}

// get returns the names remembered for image ID id, if fresh.
func (c *imageNames) get(id string, now time.Time) (*knownImage, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || now.After(e.expires) {
		return nil, false
	}
	return e.img, true
}

// put remembers img under its own ID.
func (c *imageNames) put(img *knownImage, now time.Time) {
	if c == nil || img.id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // still full: drop any one
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[img.id] = imageNamesEntry{img: img, expires: now.Add(c.ttl)}
}

// knownImage is what containerd knows an image by, parsed once: its ID, its
// repository tags and its repository digests grouped by canonical repository.
// Immutable once built, so the cache can share it.
type knownImage struct {
	id         string
	rawTags    []string
	tags       []imageref.Ref // rawTags parsed; zero where a tag does not parse
	rawDigests []string
	groups     map[string][]string // canonical repository -> digests
	order      []imageref.Ref      // one reference per repository, first seen first
}

func newKnownImage(img *runtimeapi.Image) *knownImage {
	k := &knownImage{id: img.GetId(), rawTags: img.GetRepoTags(), rawDigests: img.GetRepoDigests(),
		groups: make(map[string][]string, len(img.GetRepoDigests()))}
	k.tags = make([]imageref.Ref, len(k.rawTags))
	for i, t := range k.rawTags {
		if r, err := imageref.Parse(t); err == nil {
			k.tags[i] = r
		}
	}
	// Unparsable digests are dropped: they cannot be judged.
	for _, rd := range k.rawDigests {
		r, err := imageref.Parse(rd)
		if err != nil || !r.HasDigest() {
			continue
		}
		repo := r.Repository()
		if _, seen := k.groups[repo]; !seen {
			k.order = append(k.order, r)
		}
		k.groups[repo] = append(k.groups[repo], r.Digest())
	}
	return k
}

// knownAs reports whether containerd knows the image by ref: its digest among
// the repository's digests, else its tag among the image's tags.
func (k *knownImage) knownAs(ref imageref.Ref) bool {
	if ref.HasDigest() {
		return slices.Contains(k.groups[ref.Repository()], ref.Digest())
	}
	for _, t := range k.tags {
		if !t.IsZero() && t.Repository() == ref.Repository() && t.Tag() == ref.Tag() && !t.HasDigest() {
			return true
		}
	}
	return false
}

// digestsFor are the digests to judge for a name the image is known as: the
// one it pins, else every digest containerd holds for its repository.
func (k *knownImage) digestsFor(ref imageref.Ref) []string {
	if ref.HasDigest() {
		return []string{ref.Digest()}
	}
	return k.groups[ref.Repository()]
}

// nameFor prefers a tag of the repository (what policies' patterns are
// usually written against), else the repository digest's own reference.
func (k *knownImage) nameFor(repo imageref.Ref) (string, imageref.Ref) {
	for i, t := range k.tags {
		if !t.IsZero() && t.Repository() == repo.Repository() {
			return k.rawTags[i], t
		}
	}
	return repo.Repository(), repo
}
