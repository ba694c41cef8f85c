package sigformat

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bundle whose transparency-log entry body has no apiVersion makes rekor's
// parser (under sigstore-go) panic; ParseBundle must refuse it instead, or one
// pushed referrer would crash the node's CRI proxy. The bundles are real ones
// from testdata/sigstore (cosign v3.1.3 with a Rekor), mutated.
func TestParseBundleRefusesWhatPanicsTheLibrary(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "sigstore", "registry", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	mutated := 0
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte(`"tlogEntries"`)) || !strings.Contains(string(raw), BundleMediaTypePrefix) {
			continue
		}
		if _, err := ParseBundle(raw); err != nil {
			t.Fatalf("the real bundle %s does not parse: %v", e.Name(), err)
		}
		var b map[string]any
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		entries := b["verificationMaterial"].(map[string]any)["tlogEntries"].([]any)
		entry := entries[0].(map[string]any)
		body, err := base64.StdEncoding.DecodeString(entry["canonicalizedBody"].(string))
		if err != nil {
			t.Fatal(err)
		}
		entry["canonicalizedBody"] = base64.StdEncoding.EncodeToString(bytes.Replace(body, []byte(`"apiVersion"`), []byte(`"apiVersioX"`), 1))
		bad, _ := json.Marshal(b)
		if _, err := ParseBundle(bad); err == nil {
			t.Errorf("bundle %s with an entry body lacking apiVersion parsed", e.Name())
		}
		mutated++
	}
	if mutated == 0 {
		t.Fatal("no Rekor-backed bundle found in testdata/sigstore: the test would prove nothing")
	}
}
