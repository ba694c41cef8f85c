package enforce

import (
	"container/list"
	"sync"
)

// lru is a bounded map that drops its least recently used entry when full.
// Everything the enforcer remembers from kubelet's calls goes through one, so
// that no caller can grow criguard's memory without bound.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // of K, most recently used at front
	items map[K]*lruItem[V]
}

type lruItem[V any] struct {
	val  V
	elem *list.Element
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, order: list.New(), items: make(map[K]*lruItem[V])}
}

// get returns the value for k and marks it used.
func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(it.elem)
	return it.val, true
}

// put sets k to v, dropping the least recently used entries past max.
func (c *lru[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if it, ok := c.items[k]; ok {
		it.val = v
		c.order.MoveToFront(it.elem)
		return
	}
	c.items[k] = &lruItem[V]{val: v, elem: c.order.PushFront(k)}
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(K))
	}
}

// remove forgets k.
func (c *lru[K, V]) remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if it, ok := c.items[k]; ok {
		c.order.Remove(it.elem)
		delete(c.items, k)
	}
}

func (c *lru[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}
