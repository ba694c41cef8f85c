package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/criguard/criguard/verifier/imageref"
)

// Verification slots bound the signature verifications running at once: each
// may hold up to MaxSignatures bounded reads, so memory under a flood of
// distinct images (or a hostile registry answering slowly) stays bounded.
// They are shared fairly by registry: one registry holds at most perHost of
// them, and a freed slot goes to the waiting registry that holds the fewest,
// so a slow or hostile registry cannot starve verifications for the others.
const (
	DefaultMaxConcurrentVerifications = 16
	// DefaultMaxVerificationsPerRegistry is half of the slots.
	DefaultMaxVerificationsPerRegistry = DefaultMaxConcurrentVerifications / 2
)

// ErrSaturated marks a verification that got no slot within its timeout.
var ErrSaturated = errors.New("no verification slot became free in time")

type slots struct {
	mu      sync.Mutex
	total   int
	perHost int
	used    int
	held    map[string]int
	queue   []*slotWaiter
}

type slotWaiter struct {
	host  string
	ready chan struct{} // closed when the slot is granted
}

func newSlots(total, perHost int) *slots {
	if total < 1 {
		total = DefaultMaxConcurrentVerifications
	}
	if perHost < 1 || perHost > total {
		perHost = max(1, total/2)
	}
	return &slots{total: total, perHost: perHost, held: map[string]int{}}
}

// acquire waits for a slot for host; release gives it back.
func (s *slots) acquire(ctx context.Context, host string) (release func(), err error) {
	release = func() { s.release(host) }
	w := &slotWaiter{host: host, ready: make(chan struct{})}
	s.mu.Lock()
	s.queue = append(s.queue, w)
	s.dispatch() // a registry below its share gets a free slot even while others wait
	s.mu.Unlock()
	select {
	case <-w.ready:
		return release, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.ready: // granted while giving up: hand it on
		s.held[host]--
		s.used--
		s.dispatch()
	default:
		for i, q := range s.queue {
			if q == w {
				s.queue = append(s.queue[:i], s.queue[i+1:]...)
				break
			}
		}
	}
	return nil, fmt.Errorf("%w: %d verifications were running (at most %d for registry %s) and none finished within this one's timeout: %w",
		ErrSaturated, s.used, s.perHost, host, ctx.Err())
}

func (s *slots) grant(host string) {
	s.used++
	s.held[host]++
}

func (s *slots) release(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
	if s.held[host]--; s.held[host] <= 0 {
		delete(s.held, host)
	}
	s.dispatch()
}

// dispatch hands free slots to waiters: each time to the earliest waiter of
// the registry holding the fewest slots.
func (s *slots) dispatch() {
	for s.used < s.total {
		best := -1
		for i, w := range s.queue {
			if s.held[w.host] >= s.perHost {
				continue
			}
			if best < 0 || s.held[w.host] < s.held[s.queue[best].host] {
				best = i
			}
		}
		if best < 0 {
			return
		}
		w := s.queue[best]
		s.queue = append(s.queue[:best], s.queue[best+1:]...)
		s.grant(w.host)
		close(w.ready)
	}
}

// SlotStats counts verifications that got no slot in time.
type SlotStats struct {
	// Saturated is every such verification (each is incomplete).
	Saturated uint64
	// SaturatedFailedOpen is those a failurePolicy: Ignore rule let through.
	SaturatedFailedOpen uint64
}

type slotCounters struct{ saturated, failedOpen atomic.Uint64 }

// SlotStats reports the saturation counters (for metrics).
func (e *Engine) SlotStats() SlotStats {
	return SlotStats{Saturated: e.slotCount.saturated.Load(), SaturatedFailedOpen: e.slotCount.failedOpen.Load()}
}

// saturated counts a verification that got no slot and, when the rule's
// failurePolicy Ignore will let the image through unverified, says so loudly:
// that is a flood (or a slow registry) turning verification off.
func (e *Engine) saturated(ctx context.Context, m matchedRule, ref imageref.Ref, digest string, err error) {
	e.slotCount.saturated.Add(1)
	if m.r.Policy.FailurePolicy != Ignore {
		e.log.WarnContext(ctx, "verification slots saturated: the verification is incomplete and denied (failurePolicy Fail)",
			"image", ref.String(), "digest", digest, "registry", ref.Registry(), "policy", m.r.Policy.Name, "rule", m.r.Name, "error", err)
		return
	}
	e.slotCount.failedOpen.Add(1)
	e.log.ErrorContext(ctx, "verification slots saturated: FAILING OPEN under failurePolicy Ignore, the image runs unverified; raise the slots, lower the load, or use failurePolicy Fail",
		"image", ref.String(), "digest", digest, "registry", ref.Registry(), "policy", m.r.Policy.Name, "rule", m.r.Name, "error", err)
}
