package policy

import (
	"container/list"
	"sync"
	"time"
)

// verdictCache is a bounded LRU of decisions with a per-entry expiry.
type verdictCache struct {
	mu         sync.Mutex
	max        int
	generation uint64
	ll         *list.List
	items      map[string]*list.Element
}

type cacheEntry struct {
	key     string
	d       Decision
	expires time.Time
}

func newVerdictCache() *verdictCache {
	return &verdictCache{ll: list.New(), items: map[string]*list.Element{}}
}

// reset empties the cache when the policy generation changes (old keys could
// never be hit again; this frees them) and applies the new bound.
func (c *verdictCache) sync(gen uint64, max int) {
	if gen < c.generationNow() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Generations only move forward: an evaluation still running under an
	// older set must not empty the cache the newer set is filling.
	if gen > c.generation {
		c.generation = gen
		c.ll.Init()
		clear(c.items)
	}
	c.max = max
	c.evict()
}

func (c *verdictCache) generationNow() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.generation
}

func (c *verdictCache) get(key string, now time.Time) (Decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return Decision{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, key)
		return Decision{}, false
	}
	c.ll.MoveToFront(el)
	return e.d, true
}

func (c *verdictCache) put(gen uint64, key string, d Decision, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.generation || c.max <= 0 {
		return // a verdict under an older policy must not enter the new cache
	}
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.d, e.expires = d, expires
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, d: d, expires: expires})
	c.evict()
}

func (c *verdictCache) evict() {
	for c.ll.Len() > c.max && c.ll.Len() > 0 {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.items, el.Value.(*cacheEntry).key)
	}
}

func (c *verdictCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
