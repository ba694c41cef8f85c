// Package unit holds criguard's systemd unit (embedded byte for byte, so the
// installer writes exactly the reviewed file) and a ServiceManager that drives
// the host's systemd from inside a privileged pod.
//
// The installer itself lives in systemd/nodeinstall; this package only knows
// the unit, the host paths it names, and how to run systemctl on the host.
package unit

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"path"
	"strings"
)

//go:embed criguard.service
var unit []byte

// Host paths named by the unit and used by the installer. They are absolute
// paths on the host; the installer joins them under its --host-root.
const (
	// UnitName is the systemd unit criguard runs as.
	UnitName = "criguard.service"
	// KubeletUnit is the unit restarted after kubelet's endpoint changes.
	KubeletUnit = "kubelet.service"
	// UnitPath is where the unit file is written.
	UnitPath = "/etc/systemd/system/criguard.service"
	// WantsLink is the symlink `systemctl enable` creates from the unit's
	// [Install] WantedBy=kubelet.service.
	WantsLink = "/etc/systemd/system/kubelet.service.wants/criguard.service"
	// BinaryPath is the criguard binary ExecStart runs.
	BinaryPath = "/usr/local/bin/criguard"
	// ConfigDir holds the policy and keys; the operator owns it.
	ConfigDir = "/etc/criguard"
	// PolicyDir is the --policy directory of ExecStart.
	PolicyDir = "/etc/criguard/policy"
	// KeysDir holds public keys that policies name by file.
	KeysDir = "/etc/criguard/keys"
	// TrustedRootFile is the name of a Sigstore trusted root among the keys;
	// the installer passes it to serve when the node's keys hold one.
	TrustedRootFile = "trusted_root.json"
	// TrustedRootPath is where that trusted root lies on the host.
	TrustedRootPath = KeysDir + "/" + TrustedRootFile
	// RuntimeDir is the unit's RuntimeDirectory.
	RuntimeDir = "/run/criguard"
	// SocketPath is where criguard serves CRI (ExecStart --listen).
	SocketPath = "/run/criguard/criguard.sock"
	// Endpoint is kubelet's containerRuntimeEndpoint once criguard is installed.
	Endpoint = "unix://" + SocketPath
	// UpstreamEndpoint is containerd's socket (ExecStart --upstream).
	UpstreamEndpoint = "unix:///run/containerd/containerd.sock"
	// MetricsAddress serves /metrics, /healthz and /readyz (ExecStart
	// --metrics-address); loopback only, override with a drop-in to scrape.
	MetricsAddress = "127.0.0.1:9464"
	// StateDir holds the installer's record of what it changed and the
	// original bytes of every kubelet file it edited.
	StateDir = "/var/lib/criguard"
)

// Unit returns the unit file's bytes (a copy; callers may keep it).
func Unit() []byte {
	return append([]byte(nil), unit...)
}

// Config is what differs between nodes' units.
type Config struct {
	// TrustedRoot is the host path ExecStart passes to serve as
	// --trusted-root; "" passes none (serve uses its embedded public-good root).
	TrustedRoot string
}

// Render returns the unit for c: the embedded file, with c's flags appended to
// ExecStart. The zero Config renders the embedded file byte for byte.
func Render(c Config) ([]byte, error) {
	if c.TrustedRoot == "" {
		return Unit(), nil
	}
	if err := checkUnitPath(c.TrustedRoot); err != nil {
		return nil, fmt.Errorf("--trusted-root: %w", err)
	}
	return appendExecStart(Unit(), " --trusted-root "+c.TrustedRoot)
}

// TrustedRootOf returns the --trusted-root a unit's ExecStart passes, "" for
// none (or no ExecStart): what an installed unit makes serve trust.
func TrustedRootOf(u []byte) string {
	for _, line := range bytes.Split(u, []byte("\n")) {
		v, ok := bytes.CutPrefix(line, []byte("ExecStart="))
		if !ok {
			continue
		}
		f := strings.Fields(string(v))
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--trusted-root" {
				return f[i+1]
			}
		}
	}
	return ""
}

// checkUnitPath accepts an absolute, clean path of characters systemd reads
// literally in ExecStart. The unit writes its paths unquoted; a path that would
// need quoting or escaping (space, quote, backslash, % specifier, $ variable)
// is refused instead.
func checkUnitPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("%q is not an absolute, clean path", p)
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '/', r == '.', r == '_', r == '-', r == '+':
		default:
			return fmt.Errorf("%q has %q: only letters, digits and / . _ - + can stand unquoted in the unit's ExecStart", p, r)
		}
	}
	return nil
}

// appendExecStart appends args to the unit's one ExecStart line.
func appendExecStart(u []byte, args string) ([]byte, error) {
	const key = "\nExecStart="
	i := bytes.Index(u, []byte(key))
	if i < 0 || bytes.Count(u, []byte(key)) != 1 {
		return nil, errors.New("the embedded unit has no single ExecStart line")
	}
	end := bytes.IndexByte(u[i+1:], '\n')
	if end < 0 {
		return nil, errors.New("the embedded unit's ExecStart line does not end")
	}
	end += i + 1
	out := make([]byte, 0, len(u)+len(args))
	out = append(append(append(out, u[:end]...), args...), u[end:]...)
	return out, nil
}
