package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestNodeCommandErrors(t *testing.T) {
	missing := t.TempDir() + "/absent"
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"node"}, 2, "usage: criguard node"},
		{[]string{"node", "reinstall"}, 2, `unknown subcommand "reinstall"`},
		{[]string{"node", "install", "extra"}, 2, "unexpected arguments"},
		{[]string{"node", "status", "--expect", "maybe"}, 2, "--expect must be"},
		{[]string{"node", "install", "--host-root", missing}, 1, "open host root " + missing},
		{[]string{"node", "uninstall", "--host-root", missing, "--dry-run"}, 1, "open host root"},
		{[]string{"node", "status", "--host-root", t.TempDir()}, 1, "criguard is not installed"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("criguard %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, errb.String(), c.code, c.want)
		}
	}
}
