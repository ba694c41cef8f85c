package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// The ImagePolicy fixtures the CRD schema is tested against
// (daemonset/validate/crd_test.go) must mean what their folder says to the
// loader too: valid ones load, the others are refused.
func TestImagePolicyFixtures(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "imagepolicy")
	for _, tc := range []struct {
		dir   string
		valid bool
	}{{"valid", true}, {"invalid", false}, {"loader-only", false}} {
		files, err := filepath.Glob(filepath.Join(root, tc.dir, "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no fixtures in %s (%v)", tc.dir, err)
		}
		for _, f := range files {
			t.Run(tc.dir+"/"+filepath.Base(f), func(t *testing.T) {
				if _, err := os.Stat(f); err != nil {
					t.Fatal(err)
				}
				_, err := Load(f)
				if tc.valid && err != nil {
					t.Fatalf("valid fixture refused: %v", err)
				}
				if !tc.valid && err == nil {
					t.Fatal("invalid fixture loaded")
				}
				if err != nil {
					t.Logf("refused: %v", err)
				}
			})
		}
	}
}
