package nodeinstall

import (
	"context"
	"strings"
	"testing"
)

// The last line a run logs is its summary; a dry run with Watch or Hold
// returns instead of blocking.
func TestRunLogsSummary(t *testing.T) {
	f := newFixture(t, nodes[0])
	steps := []struct {
		name   string
		run    func(context.Context, Options, RunOptions) error
		dryRun bool
		ro     RunOptions
		want   string
	}{
		{"install dry run", RunInstall, true, RunOptions{Watch: true}, "dry run: "},
		{"install", RunInstall, false, RunOptions{}, "done: "},
		{"install again", RunInstall, false, RunOptions{}, "unchanged"},
		{"sync", RunSync, false, RunOptions{}, "unchanged"},
		{"uninstall dry run", RunUninstall, true, RunOptions{Hold: true}, "dry run: "},
		{"uninstall", RunUninstall, false, RunOptions{}, "done: "},
		{"uninstall again", RunUninstall, false, RunOptions{}, "unchanged"},
	}
	for _, s := range steps {
		f.log.Reset()
		o := f.opts()
		o.DryRun = s.dryRun
		if err := s.run(context.Background(), o, s.ro); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		lines := strings.Split(strings.TrimSuffix(f.log.String(), "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, s.want) {
			t.Errorf("%s: last line %q, want %q...", s.name, last, s.want)
		}
	}
}
