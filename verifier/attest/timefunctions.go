package attest

import (
	"strconv"
	"time"

	"github.com/jmespath-community/go-jmespath"
)

// Kyverno's time functions: times are RFC 3339 strings, durations Go
// duration strings, results RFC 3339 strings (or Go duration strings).

// parsedArg reads argument i as a string and parses it.
func parsedArg[T any](args []any, i int, parse func(string) (T, error)) (T, error) {
	s, err := argString(args, i)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(s)
}

func argTime(args []any, i int) (time.Time, error) {
	return parsedArg(args, i, func(s string) (time.Time, error) { return time.Parse(time.RFC3339, s) })
}

func argDuration(args []any, i int) (time.Duration, error) {
	return parsedArg(args, i, time.ParseDuration)
}

// timeSince is time_since(layout, start, end): end - start as a Go duration
// string; an empty layout is RFC 3339, an empty end is now.
func timeSince(now func() time.Time) jmespath.JpFunction {
	return func(args []any) (any, error) {
		s, err := argStrings(args, 3)
		if err != nil {
			return nil, err
		}
		layout := s[0]
		if layout == "" {
			layout = time.RFC3339
		}
		start, err := time.Parse(layout, s[1])
		if err != nil {
			return nil, err
		}
		end := now()
		if s[2] != "" {
			if end, err = time.Parse(layout, s[2]); err != nil {
				return nil, err
			}
		}
		return end.Sub(start).String(), nil
	}
}

// argTimes reads the first n arguments as RFC 3339 times.
func argTimes(args []any, n int) ([]time.Time, error) { return firstN(args, n, argTime) }

// timesFn is a function of n times.
func timesFn(n int, f func(t []time.Time) any) jmespath.JpFunction {
	return func(args []any) (any, error) {
		t, err := argTimes(args, n)
		if err != nil {
			return nil, err
		}
		return f(t), nil
	}
}

func timeDuration(f func(time.Time, time.Duration) any) jmespath.JpFunction {
	return func(args []any) (any, error) {
		t, err := argTime(args, 0)
		if err != nil {
			return nil, err
		}
		d, err := argDuration(args, 1)
		if err != nil {
			return nil, err
		}
		return f(t, d), nil
	}
}

// timeToCron is "minute hour day-of-month month day-of-week" of the time in
// its own offset.
func timeToCron(ts []time.Time) any {
	t := ts[0]
	return strconv.Itoa(t.Minute()) + " " + strconv.Itoa(t.Hour()) + " " + strconv.Itoa(t.Day()) + " " +
		strconv.Itoa(int(t.Month())) + " " + strconv.Itoa(int(t.Weekday()))
}

// jpTimeParse is time_parse(layout, time) as RFC 3339; a layout that is an
// integer means the time is Unix seconds (given in UTC).
func jpTimeParse(args []any) (any, error) {
	s, err := argStrings(args, 2)
	if err != nil {
		return nil, err
	}
	layout, ts := s[0], s[1]
	if _, err := strconv.ParseInt(layout, 10, 64); err == nil {
		secs, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return nil, err
		}
		return time.Unix(secs, 0).UTC().Format(time.RFC3339), nil
	}
	t, err := time.Parse(layout, ts)
	if err != nil {
		return nil, err
	}
	return t.Format(time.RFC3339), nil
}
