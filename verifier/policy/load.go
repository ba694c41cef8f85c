package policy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Bounds on what Load reads: policies are small, and a policy path is operator
// input but may be a mounted ConfigMap anyone with RBAC can edit.
const (
	MaxFileSize  = 4 << 20
	MaxFiles     = 256
	MaxDocuments = 1024
)

// LoadError is one reason a policy set is refused, located by file, document
// (1-based; 0 when the file itself failed) and field path.
type LoadError struct {
	File     string
	Document int
	Path     string
	Msg      string
}

func (e *LoadError) Error() string {
	return location(e.File, e.Document, e.Path) + ": " + e.Msg
}

// Load reads a policy file, or every *.yaml, *.yml and *.json file directly in a
// directory (not recursively; names starting with "." are skipped, which skips
// a mounted ConfigMap's ..data machinery while following its symlinks), and
// compiles every document. Any error refuses the whole set; the error joins
// every *LoadError found.
func Load(path string) (*Set, error) {
	files, err := policyFiles(path)
	if err != nil {
		return nil, err
	}
	set := &Set{}
	var errs []error
	h := sha256.New()
	docs := 0
	for _, f := range files {
		data, err := readBounded(f)
		if err != nil {
			errs = append(errs, &LoadError{File: f, Msg: err.Error()})
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
		pols, warns, ferrs := loadDocuments(f, data, &docs)
		set.Policies = append(set.Policies, pols...)
		set.Warnings = append(set.Warnings, warns...)
		errs = append(errs, ferrs...)
	}
	// Key files are part of the policy: a changed key must change the digest.
	for _, p := range set.Policies {
		for _, r := range p.Rules {
			for _, a := range r.allSets() {
				for _, at := range a.Attestors {
					k := at.Key
					if k == nil {
						continue
					}
					fmt.Fprintf(h, "key\x00%s\x00%s\x00", k.Name, k.Algorithm)
					if pub, err := k.PublicKey(); err == nil {
						if der, err := x509.MarshalPKIXPublicKey(pub); err == nil {
							h.Write(der)
						}
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(set.Policies) == 0 {
		return nil, &LoadError{File: path, Msg: noPolicyReason(set.Warnings)}
	}
	seen := map[string]*Policy{}
	for _, p := range set.Policies {
		id := string(p.Source) + "/" + p.Namespace + "/" + p.Name
		if q, ok := seen[id]; ok {
			return nil, &LoadError{File: p.File, Document: p.Document, Path: "metadata.name", Msg: fmt.Sprintf("%s %q is also defined in %s document %d", p.Source, p.Name, q.File, q.Document)}
		}
		seen[id] = p
	}
	set.Digest = hex.EncodeToString(h.Sum(nil))
	set.Warnings = append(set.Warnings, advise(set, path)...)
	return set, nil
}

// Check compiles the documents of one policy file, data, as Load would read
// it at file (key files included), without the checks that need the whole set
// (at least one policy, names unique across files). A writer uses it not to
// add a file that would make Load refuse the directory.
func Check(file string, data []byte) error {
	if len(data) > MaxFileSize {
		return &LoadError{File: file, Msg: fmt.Sprintf("larger than %d bytes", MaxFileSize)}
	}
	docs := 0
	_, _, errs := loadDocuments(file, data, &docs)
	return errors.Join(errs...)
}

func policyFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, &LoadError{File: path, Msg: err.Error()}
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, &LoadError{File: path, Msg: err.Error()}
	}
	var files []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue
		}
		ext := strings.ToLower(filepath.Ext(n))
		if ext != ".yaml" && ext != ".yml" && ext != ".json" {
			continue
		}
		full := filepath.Join(path, n)
		fst, err := os.Stat(full) // follows symlinks (ConfigMap mounts)
		if err != nil {
			return nil, &LoadError{File: full, Msg: err.Error()}
		}
		if fst.IsDir() {
			continue
		}
		files = append(files, full)
	}
	if len(files) > MaxFiles {
		return nil, &LoadError{File: path, Msg: fmt.Sprintf("%d policy files; at most %d are read", len(files), MaxFiles)}
	}
	slices.Sort(files)
	return files, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

// splitDocuments splits a YAML stream at "---" lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), MaxFileSize+1)
	for sc.Scan() {
		line := sc.Bytes()
		if isSeparator(line) {
			docs = append(docs, slices.Clone(cur.Bytes()))
			cur.Reset()
			// "--- {apiVersion: ...}" starts the document on the same line.
			if rest := bytes.TrimSpace(line[3:]); len(rest) > 0 && rest[0] != '#' {
				cur.Write(rest)
				cur.WriteByte('\n')
			}
			continue
		}
		cur.Write(line)
		cur.WriteByte('\n')
	}
	docs = append(docs, cur.Bytes())
	return docs
}

func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := line[3:]
	return len(bytes.TrimSpace(rest)) == 0 || rest[0] == ' ' || rest[0] == '\t'
}

func blank(doc []byte) bool {
	for _, l := range bytes.Split(doc, []byte("\n")) {
		t := bytes.TrimSpace(l)
		if len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("...")) {
			return false
		}
	}
	return true
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// loadDocuments compiles every document of one file.
func loadDocuments(file string, data []byte, total *int) ([]*Policy, []Warning, []error) {
	var pols []*Policy
	var warns []Warning
	var errs []error
	baseDir := filepath.Dir(file)
	for i, doc := range splitDocuments(data) {
		n := i + 1
		if blank(doc) {
			continue
		}
		*total++
		if *total > MaxDocuments {
			errs = append(errs, &LoadError{File: file, Document: n, Msg: fmt.Sprintf("more than %d documents", MaxDocuments)})
			return nil, nil, errs
		}
		p, w, err := loadDocument(file, n, doc, baseDir)
		if err != nil {
			// Every reason the document is refused, each with its path.
			for _, one := range flatten(err) {
				var fe *fieldError
				if errors.As(one, &fe) {
					errs = append(errs, &LoadError{File: file, Document: n, Path: fe.Path, Msg: fe.Msg})
				} else {
					errs = append(errs, &LoadError{File: file, Document: n, Msg: one.Error()})
				}
			}
			continue
		}
		warns = append(warns, w...)
		if p != nil {
			pols = append(pols, p)
		}
	}
	return pols, warns, errs
}

func loadDocument(file string, n int, doc []byte, baseDir string) (*Policy, []Warning, error) {
	// YAMLToJSONStrict refuses duplicate keys, which would otherwise let a
	// later "images:" silently replace an earlier one.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, nil, errAt("", "not valid YAML: %v", err)
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || t[0] != '{' {
		return nil, nil, errAt("", "a document must be a mapping with apiVersion and kind")
	}
	var tm typeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, nil, errAt("", "apiVersion and kind must be strings")
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, nil, errAt("apiVersion", "apiVersion and kind are required")
	}
	group, version, _ := strings.Cut(tm.APIVersion, "/")
	if version == "" {
		group = "" // core group, e.g. "v1"
	}
	switch {
	case group == "criguard.dev":
		if tm.APIVersion != NativeAPIVersion {
			return nil, nil, errAt("apiVersion", "unknown version %q (want %s)", tm.APIVersion, NativeAPIVersion)
		}
		if tm.Kind != NativeKind {
			return nil, nil, errAt("kind", "unknown kind %q (want %s)", tm.Kind, NativeKind)
		}
		p, err := compileNative(js, file, n, baseDir)
		return p, nil, err
	case group == "kyverno.io" && (tm.Kind == "ClusterPolicy" || tm.Kind == "Policy"):
		if version != "v1" && version != "v2beta1" {
			return nil, nil, errAt("apiVersion", "unknown version %q of Kyverno's %s (want kyverno.io/v1 or v2beta1)", tm.APIVersion, tm.Kind)
		}
		return compileKyverno(js, file, n, tm.Kind)
	case group == "kyverno.io" || strings.HasSuffix(group, ".kyverno.io"):
		if strings.Contains(tm.Kind, "Image") {
			return nil, nil, errAt("kind", "Kyverno %s (%s) is not supported: write the image verification as a kyverno.io/v1 ClusterPolicy with verifyImages", tm.Kind, tm.APIVersion)
		}
		return nil, []Warning{{File: file, Document: n, Message: fmt.Sprintf("%s %s skipped: criguard applies only ClusterPolicy/Policy verifyImages rules (exceptions and other Kyverno kinds do not weaken criguard)", tm.APIVersion, tm.Kind)}}, nil
	case tm.Kind == "List":
		return nil, nil, errAt("kind", "a List is not read: write each policy as its own YAML document")
	}
	return nil, []Warning{{File: file, Document: n, Message: fmt.Sprintf("%s %s is not a policy: skipped", tm.APIVersion, tm.Kind)}}, nil
}

// noPolicyReason says why a path yields nothing to enforce: no policy at all,
// or only policies with admission: false, which Kyverno does not apply when
// pods are admitted.
func noPolicyReason(warns []Warning) string {
	var off []string
	for _, w := range warns {
		if w.Path == "spec.admission" {
			off = append(off, location(w.File, w.Document, ""))
		}
	}
	if len(off) > 0 {
		return fmt.Sprintf("every policy found has admission: false (%s): Kyverno does not apply such a policy when pods are admitted, so there is nothing to enforce; refusing to run without a policy (set admission: true, or add a policy)", strings.Join(off, "; "))
	}
	return "no ImagePolicy, ClusterPolicy or Policy found: refusing to run without a policy"
}

// flatten lists the errors joined in err (errors.Join), depth first.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
