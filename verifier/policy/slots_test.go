package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlotsFairByRegistry: one registry holds at most its share, and a freed
// slot goes to the waiting registry that holds the fewest.
func TestSlotsFairByRegistry(t *testing.T) {
	s := newSlots(3, 2)
	ctx := context.Background()
	relA1, err := s.acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	relA2, _ := s.acquire(ctx, "a")
	// a holds its share (2): a third for a waits although a slot is free...
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := s.acquire(short, "a"); !errors.Is(err, ErrSaturated) {
		t.Fatalf("registry a took more than its share: %v", err)
	}
	// ...and b gets the free slot at once.
	relB, err := s.acquire(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	// All 3 slots taken. Waiters: a, then c. When a slot of a frees, c (holding
	// none) is served before a (holding one).
	got := make(chan string, 2)
	var wg sync.WaitGroup
	for _, h := range []string{"a", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := s.acquire(ctx, h)
			if err != nil {
				t.Error(err)
				return
			}
			got <- h
			rel()
		}()
		waitQueued(t, s, h)
	}
	relA1()
	if first := <-got; first != "c" {
		t.Fatalf("freed slot went to %s, want c (the registry holding none)", first)
	}
	relA2()
	relB()
	wg.Wait()
	if s.used != 0 || len(s.held) != 0 || len(s.queue) != 0 {
		t.Fatalf("slots leaked: used %d held %v queue %d", s.used, s.held, len(s.queue))
	}
}

func waitQueued(t *testing.T, s *slots, host string) {
	t.Helper()
	for range 1000 {
		s.mu.Lock()
		for _, w := range s.queue {
			if w.host == host {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never queued", host)
}

// TestSlowRegistryDoesNotStarveOthers is issue 11 §6: with every slot held by
// verifications against one slow registry, a verification for another
// registry used to wait (and time out). Now the slow one holds at most its
// share.
func TestSlowRegistryDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t)
	const slow, fast = "slow.example.com", "registry.example.com"
	e.v.sign(fast+"/team/app@"+digestOf('f'), e.fpA)
	set := mustLoad(t, e.expand(native("", `  - name: all
    images: ["*"]
    attestors:
      entries:
      - key: {data: KEYA}
`)))
	eng := NewEngine(NewStaticStore(set), e.v, EngineOptions{Clock: e.now, MaxConcurrentVerifications: 4, MaxVerificationsPerRegistry: 0})
	e.v.gate, e.v.slowHost = make(chan struct{}), slow
	e.v.entered = make(chan struct{}, 16)
	wait := evalConcurrently(eng, 6, func(i int) string { return slow + "/x@" + digestOf(byte('a'+i)) })
	for range 2 { // the slow registry's share: half of 4
		<-e.v.entered
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := eng.Evaluate(ctx, Input{Image: fast + "/team/app@" + digestOf('f')})
	if !d.Allowed {
		t.Fatalf("a verification for another registry was starved by a slow one: %s", d.Reason)
	}
	close(e.v.gate)
	wait()
}

// TestSaturationUnderIgnoreIsCountedAndLogged: a verification that gets no
// slot under failurePolicy Ignore fails open; that is counted and logged at
// error level, never silent.
func TestSaturationUnderIgnoreIsCountedAndLogged(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	// The holder's timeout is long, so it keeps the only slot; the other
	// policy's short timeout ends its wait for one.
	hold := strings.Replace(native("  verificationTimeout: 30s\n", strings.Replace(verifyA, "team/*", "hold/*", 1)), "name: p}", "name: holder}", 1)
	set := mustLoad(t, e.expand(native("  failurePolicy: Ignore\n  verificationTimeout: 200ms\n", verifyA)+"---\n"+hold))
	eng := NewEngine(NewStaticStore(set), e.v, EngineOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Clock: e.now, MaxConcurrentVerifications: 1, MaxVerificationsPerRegistry: 1})
	e.v.gate = make(chan struct{})
	e.v.entered = make(chan struct{}, 2)
	first := make(chan Decision)
	go func() { first <- eval(eng, "registry.example.com/hold/app@"+digestOf('1'), "") }()
	<-e.v.entered
	d := eng.Evaluate(context.Background(), Input{Image: "registry.example.com/team/app@" + digestOf('2')})
	close(e.v.gate)
	<-first
	if !d.Allowed || !d.FailedOpen || !strings.Contains(d.Reason, "no verification slot") {
		t.Fatalf("saturated under Ignore: %+v", d)
	}
	if st := eng.SlotStats(); st.Saturated != 1 || st.SaturatedFailedOpen != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "FAILING OPEN") || !strings.Contains(logs.String(), digestOf('2')) {
		t.Fatalf("no loud log:\n%s", logs.String())
	}
}
