package nodeinstall

import (
	"fmt"
	"path/filepath"

	"github.com/criguard/criguard/systemd/unit"
	"github.com/criguard/criguard/verifier/trust"
)

// hostUnit is the unit an install writes on this node.
type hostUnit struct {
	bytes []byte
	// what describes the unit in the change log.
	what string
}

// planUnit renders the unit for the keys the host holds after this run: the
// keys ConfigMap's when it has any, else the host's own (an absent or empty
// ConfigMap leaves them alone). A trusted_root.json among them is passed to
// serve as --trusted-root; one serve could not load refuses the run.
func planUnit(o *Options, h *host, keys map[string][]byte) (hostUnit, error) {
	src := filepath.Join(o.KeysDir, unit.TrustedRootFile)
	if len(keys) == 0 {
		b, ok, err := h.readFile(unit.TrustedRootPath, maxHostFile)
		if err != nil {
			return hostUnit{}, err
		}
		keys, src = nil, unit.TrustedRootPath+" on the host"
		if ok {
			keys = map[string][]byte{unit.TrustedRootFile: b}
		}
	}
	has, err := checkTrustedRoot(keys, src)
	if err != nil {
		return hostUnit{}, err
	}
	var c unit.Config
	what := "systemd unit"
	if has {
		c.TrustedRoot = unit.TrustedRootPath
		what += ", serve --trusted-root " + unit.TrustedRootPath
	}
	b, err := unit.Render(c)
	if err != nil {
		return hostUnit{}, err
	}
	return hostUnit{bytes: b, what: what}, nil
}

// checkTrustedRoot reports whether keys hold a trusted root, loading it the
// way serve does: a file serve would refuse (criguard would then not start)
// is refused here, before the host changes.
func checkTrustedRoot(keys map[string][]byte, src string) (bool, error) {
	b, ok := keys[unit.TrustedRootFile]
	if !ok {
		return false, nil
	}
	if _, err := trust.Parse(b); err != nil {
		return false, fmt.Errorf("trusted root %s: %w; criguard serve would refuse to start with it, so nothing was changed: fix the file (cosign trusted-root create) or remove it from the keys", src, err)
	}
	return true, nil
}
