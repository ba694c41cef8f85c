// Package unit holds criguard's systemd unit (embedded byte for byte, so the
// installer writes exactly the reviewed file) and a ServiceManager that drives
// the host's systemd from inside a privileged pod.
//
// The installer itself lives in systemd/nodeinstall; this package only knows
// the unit, the host paths it names, and how to run systemctl on the host.
package unit

import (
	_ "embed"
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
