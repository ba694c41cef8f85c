package harness

import (
	"context"
	"fmt"
	"os"
	"sync"
)

// Session is a T for programs (the demo): Fatalf runs the cleanups and exits 1.
type Session struct {
	name   string
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// Standalone returns a Session whose context ends with ctx (e.g. on Ctrl-C).
// Call Close when done; it runs the cleanups, last registered first.
func Standalone(ctx context.Context, name string) *Session {
	ctx, cancel := context.WithCancel(ctx)
	return &Session{name: name, ctx: ctx, cancel: cancel}
}

func (s *Session) Helper()                         {}
func (s *Session) Name() string                    { return s.name }
func (s *Session) Context() context.Context        { return s.ctx }
func (s *Session) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (s *Session) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *Session) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Fatalf prints the message, runs the cleanups and exits with status 1.
func (s *Session) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FATAL: "+format+"\n", args...)
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	s.Close()
	os.Exit(1)
}

// Close runs the registered cleanups in reverse order, once.
func (s *Session) Close() {
	s.mu.Lock()
	cs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	s.cancel()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
