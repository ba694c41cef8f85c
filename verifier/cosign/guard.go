package cosign

import (
	"fmt"
	"runtime"
	"strings"
)

// guard runs fn in one of run's goroutines, where a panic would end the
// node's CRI proxy (no caller's recover reaches another goroutine): a panic
// (a library, or a condition's JMESPath, choking on hostile input) becomes
// f, a finding that verified nothing, refused with where it happened. The
// narrower guards in sigverify and sigformat still say which input failed.
func (j *judgement) guard(what string, f finding, fn func() error) func() error {
	return func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				f.problem = fmt.Sprintf("verifying %s panicked at %s (%v); the panic was recovered and the signature refused (a bug: please report it with criguard's log)", what, panicSite(), r)
				j.add(f)
				err = nil
			}
		}()
		return fn()
	}
}

// panicSite is the function and line that panicked, for a bug report: the
// first frame below the runtime's panic machinery. Called from a deferred
// function during the panic.
func panicSite() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	inPanic := false
	for {
		fr, more := frames.Next()
		switch {
		case fr.Function == "runtime.gopanic":
			inPanic = true
		case inPanic && !strings.HasPrefix(fr.Function, "runtime."):
			return fmt.Sprintf("%s (%s:%d)", fr.Function, fr.File, fr.Line)
		}
		if !more {
			return "an unknown place"
		}
	}
}
