package enforce

import (
	"sync"
	"time"

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
	img     *runtimeapi.Image
	expires time.Time
}

func newImageNames(ttl time.Duration, max int) *imageNames {
	return &imageNames{ttl: ttl, max: max, entries: make(map[string]imageNamesEntry)}
}

// get returns the names remembered for image ID id, if fresh.
func (c *imageNames) get(id string, now time.Time) (*runtimeapi.Image, bool) {
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

// put remembers img under its own ID, keeping only what judging reads.
func (c *imageNames) put(img *runtimeapi.Image, now time.Time) {
	if c == nil || img.GetId() == "" {
		return
	}
	keep := &runtimeapi.Image{Id: img.GetId(), RepoTags: img.GetRepoTags(), RepoDigests: img.GetRepoDigests()}
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
	c.entries[keep.Id] = imageNamesEntry{img: keep, expires: now.Add(c.ttl)}
}
