package policysync

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// File name prefixes of what the syncer owns in its directory; other files
// there are left alone.
const (
	prefixImagePolicy = "imagepolicy-"
	prefixKyverno     = "kyverno-"
)

// maxFileBytes bounds one policy file: far above any real policy, and what
// criguard's loader reads at most.
const maxFileBytes = 1 << 20

// maxFileName leaves room, within a file system's 255 bytes, for the
// writer's temporary name ("." + name + ".tmp-" + digits).
const maxFileName = 200

// lastApplied is kubectl's copy of the whole object: left out of what is written.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// policyFile is one object as criguard's loader reads it: apiVersion, kind,
// name (and namespace), labels, annotations and spec. Status and server
// fields are left out. The header comment says where it came from.
func policyFile(obj *unstructured.Unstructured) ([]byte, error) {
	meta := map[string]any{"name": obj.GetName()}
	if ns := obj.GetNamespace(); ns != "" {
		meta["namespace"] = ns
	}
	if l := obj.GetLabels(); len(l) > 0 {
		meta["labels"] = l
	}
	if a := obj.GetAnnotations(); len(a) > 0 {
		delete(a, lastApplied)
		if len(a) > 0 {
			meta["annotations"] = a
		}
	}
	doc := map[string]any{
		"apiVersion": obj.GetAPIVersion(),
		"kind":       obj.GetKind(),
		"metadata":   meta,
	}
	if spec, ok := obj.Object["spec"]; ok {
		doc["spec"] = spec
	}
	body, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", obj.GetKind(), objectName(obj), err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s %s generation %d (uid %s), written by criguard-sync from the API server.\n",
		obj.GetKind(), objectName(obj), obj.GetGeneration(), obj.GetUID())
	b.Write(body)
	if b.Len() > maxFileBytes {
		return nil, fmt.Errorf("%s %s is %d bytes encoded, more than the %d-byte limit of a policy file", obj.GetKind(), objectName(obj), b.Len(), maxFileBytes)
	}
	return b.Bytes(), nil
}

// fileName is the object's file: its kind's prefix and its name (namespaced
// Kyverno Policies also by namespace). Names are DNS subdomains, so safe.
func fileName(obj *unstructured.Unstructured) string {
	switch obj.GetKind() {
	case "ImagePolicy":
		return prefixImagePolicy + obj.GetName() + ".yaml"
	case "Policy":
		return prefixKyverno + "policy-" + obj.GetNamespace() + "." + obj.GetName() + ".yaml"
	default:
		return prefixKyverno + "clusterpolicy-" + obj.GetName() + ".yaml"
	}
}

func objectName(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return ns + "/" + obj.GetName()
	}
	return obj.GetName()
}

func owned(name string) bool {
	return strings.HasSuffix(name, ".yaml") && (strings.HasPrefix(name, prefixImagePolicy) || strings.HasPrefix(name, prefixKyverno))
}

// dirWriter makes a directory hold exactly a set of files (of those it owns).
type dirWriter struct {
	dir string
}

// apply writes new and changed files atomically first, then removes owned
// files no longer wanted, and returns the names it wrote. An empty want
// changes nothing (see the package comment).
func (w dirWriter) apply(want map[string][]byte) (written []string, err error) {
	if len(want) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		old, err := readBounded(filepath.Join(w.dir, n))
		if err == nil && bytes.Equal(old, want[n]) {
			continue
		}
		if err := writeAtomic(w.dir, n, want[n]); err != nil {
			return written, err
		}
		written = append(written, n)
	}
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return written, fmt.Errorf("read policy directory %s: %w", w.dir, err)
	}
	for _, e := range ents {
		if _, keep := want[e.Name()]; keep || !owned(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(w.dir, e.Name())); err != nil {
			return written, fmt.Errorf("remove %s (its policy object is gone): %w", e.Name(), err)
		}
	}
	return written, syncDir(w.dir)
}

// present reports whether the directory already holds a policy file (what
// the node keeps enforcing when the API server cannot be reached).
func (w dirWriter) present() bool {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if owned(e.Name()) && e.Type().IsRegular() {
			return true
		}
	}
	return false
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(f, maxFileBytes+1)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeAtomic writes dir/name through a temporary file in dir: fsync, rename.
func writeAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s in %s: %w", name, dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		return fmt.Errorf("write %s in %s: %w", name, dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync policy directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync policy directory %s: %w", dir, err)
	}
	return nil
}
