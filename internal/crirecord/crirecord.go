// Package crirecord keeps the judged CRI requests (PullImage,
// CreateContainer) that reach a test's fake runtime: what containerd would
// have received. The fakes of criproxy/forward and criproxy/enforce embed it.
package crirecord

import (
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Calls is safe for the concurrent calls of a gRPC server; its zero value is
// ready.
type Calls struct {
	mu      sync.Mutex
	pulls   []*runtimeapi.PullImageRequest
	creates []*runtimeapi.CreateContainerRequest
}

// AddPull records a PullImage request that reached the runtime.
func (c *Calls) AddPull(req *runtimeapi.PullImageRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pulls = append(c.pulls, req)
}

// AddCreate records a CreateContainer request that reached the runtime.
func (c *Calls) AddCreate(req *runtimeapi.CreateContainerRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.creates = append(c.creates, req)
}

// LastPull is the latest PullImage request, nil before any.
func (c *Calls) LastPull() *runtimeapi.PullImageRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return last(c.pulls)
}

// PullCount is how many PullImage requests reached the runtime.
func (c *Calls) PullCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pulls)
}

// LastCreate is the latest CreateContainer request, nil before any.
func (c *Calls) LastCreate() *runtimeapi.CreateContainerRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return last(c.creates)
}

func last[T any](s []*T) *T {
	if len(s) == 0 {
		return nil
	}
	return s[len(s)-1]
}
