package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CosignCLI runs the real cosign binary offline: keys only, no transparency
// log, no signing config, HOME and TUF root in a temp dir so nothing global is
// read or written.
type CosignCLI struct {
	Path string
	home string
}

// Cosign returns the installed cosign CLI.
func Cosign(t T) *CosignCLI {
	t.Helper()
	return &CosignCLI{Path: Tool(t, "cosign"), home: TempDir(t, "cosign")}
}

// Run runs cosign with args and COSIGN_PASSWORD empty.
func (c *CosignCLI) Run(t T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return c.run(t, "", args...)
}

func (c *CosignCLI) run(t T, dir string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(t.Context(), c.Path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "HOME="+c.home, "TUF_ROOT="+filepath.Join(c.home, "tuf"),
		"SIGSTORE_NO_CACHE=true", "COSIGN_YES=true")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("cosign %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(e.String()))
	}
	return o.String(), e.String(), err
}

// GenerateKeyPair writes cosign.key and cosign.pub (ECDSA P-256, empty
// password) into dir and returns their paths.
func (c *CosignCLI) GenerateKeyPair(t T, dir string) (key, pub string) {
	t.Helper()
	if _, _, err := c.run(t, dir, "generate-key-pair"); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
}

// ImportKeyPair imports a PEM private key (e.g. RSA) into dir as
// import-cosign.key / import-cosign.pub and returns their paths.
func (c *CosignCLI) ImportKeyPair(t T, dir, privateKeyPEM string) (key, pub string) {
	t.Helper()
	src := filepath.Join(dir, "import-src.pem")
	if err := os.WriteFile(src, []byte(privateKeyPEM), 0o600); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if _, _, err := c.run(t, dir, "import-key-pair", "--key", src, "--output-key-prefix", "import-cosign"); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return filepath.Join(dir, "import-cosign.key"), filepath.Join(dir, "import-cosign.pub")
}

// Sign signs ref (best given by digest) with key. legacy selects the
// `sha256-<hex>.sig` tag of simple-signing payloads; otherwise cosign v3's
// default Sigstore bundle attached as an OCI referrer (or its fallback tag).
func (c *CosignCLI) Sign(t T, key, ref string, legacy bool) {
	t.Helper()
	args := []string{"sign", "--yes", "--key", key, "--tlog-upload=false", "--use-signing-config=false"}
	if legacy {
		args = append(args, "--new-bundle-format=false")
	}
	if _, _, err := c.run(t, "", append(args, ref)...); err != nil {
		t.Fatalf("harness: %v", err)
	}
}

// Verify runs `cosign verify --key pub --insecure-ignore-tlog ref`.
func (c *CosignCLI) Verify(t T, pub, ref string) (string, error) {
	t.Helper()
	out, _, err := c.run(t, "", "verify", "--key", pub, "--insecure-ignore-tlog", ref)
	return out, err
}
