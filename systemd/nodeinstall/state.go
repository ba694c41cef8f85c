package nodeinstall

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/criguard/criguard/systemd/unit"
)

// statePath records what install changed in kubelet's files, so uninstall can
// put back exactly what was there.
var statePath = path.Join(unit.StateDir, "install-state.json")

// backupDir holds the original bytes of each kubelet file before its first edit.
var backupDir = path.Join(unit.StateDir, "backup")

// Kinds of kubelet files.
const (
	kindEnv    = "env"
	kindConfig = "config"
)

// installState is the installer's record on the host.
type installState struct {
	Version int          `json:"version"`
	Files   []editedFile `json:"files"`
	// KubeletRestartPending is set before kubelet's files are edited and
	// cleared once kubelet is healthy through criguard: a run interrupted in
	// between restarts kubelet on the next install.
	KubeletRestartPending bool `json:"kubeletRestartPending,omitempty"`
}

// editedFile is one kubelet file the installer edited.
type editedFile struct {
	// Path is the host path of the edited file.
	Path string `json:"path"`
	// Kind is kindEnv (an EnvironmentFile with flags) or kindConfig (a
	// KubeletConfiguration).
	Kind string `json:"kind"`
	// Backup is the host path holding the bytes the file had before the edit.
	Backup string `json:"backup"`
	// InstalledSHA256 is the digest of the bytes the installer wrote: when the
	// file still has them at uninstall, the backup is restored byte for byte;
	// otherwise someone changed it since and only the endpoints are put back.
	InstalledSHA256 string `json:"installedSHA256"`
	// Original maps each endpoint setting (KubeletConfiguration key) to the
	// value it had before ("" when it was absent).
	Original map[string]string `json:"original"`
}

func (s *installState) find(p string) *editedFile {
	for i := range s.Files {
		if s.Files[i].Path == p {
			return &s.Files[i]
		}
	}
	return nil
}

func (s *installState) put(f editedFile) {
	if old := s.find(f.Path); old != nil {
		*old = f
		return
	}
	s.Files = append(s.Files, f)
}

func (s *installState) drop(p string) {
	out := s.Files[:0]
	for _, f := range s.Files {
		if f.Path != p {
			out = append(out, f)
		}
	}
	s.Files = out
}

func loadState(h *host) (*installState, error) {
	b, ok, err := h.readFile(statePath, maxHostFile)
	if err != nil {
		return nil, err
	}
	st := &installState{Version: 1}
	if !ok {
		return st, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("read %s on the host: %w (move it away to start over; kubelet's original files are in %s)", statePath, err, backupDir)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("%s on the host has version %d; this criguard understands version 1", statePath, st.Version)
	}
	return st, nil
}

func saveState(h *host, st *installState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	_, err = h.ensureFile(statePath, append(b, '\n'), 0o600, "installer state")
	return err
}

// backupName is the backup file for a host path: the path with / as _.
func backupName(p string) string {
	return path.Join(backupDir, strings.ReplaceAll(strings.TrimPrefix(path.Clean(p), "/"), "/", "_"))
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
