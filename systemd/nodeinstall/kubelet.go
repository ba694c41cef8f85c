package nodeinstall

import (
	"bytes"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/criguard/criguard/systemd/unit"
)

// Kubelet's two endpoint settings, as KubeletConfiguration keys and as flags.
const (
	keyRuntime  = "containerRuntimeEndpoint"
	keyImage    = "imageServiceEndpoint"
	flagRuntime = "container-runtime-endpoint"
	flagImage   = "image-service-endpoint"
)

var configKeys = []string{keyRuntime, keyImage}

// flagKey maps a kubelet flag to its KubeletConfiguration key.
var flagKey = map[string]string{flagRuntime: keyRuntime, flagImage: keyImage}

// rewriteFunc maps one endpoint value found in a kubelet file (under key) to
// the value it should have. Returning the same value means no change.
type rewriteFunc func(key, old string) (string, error)

// normalizeEndpoint makes endpoints comparable: unix:// is optional in
// kubelet's flags, and /var/run is /run on every current distribution.
func normalizeEndpoint(ep string) string {
	p := strings.TrimPrefix(strings.TrimSpace(ep), "unix://")
	if !strings.HasPrefix(p, "/") {
		return ep
	}
	p = path.Clean(p)
	if strings.HasPrefix(p, "/var/run/") {
		p = strings.TrimPrefix(p, "/var")
	}
	return "unix://" + p
}

// isContainerd reports whether ep is containerd's default socket, the one the
// unit's ExecStart forwards to.
func isContainerd(ep string) bool { return normalizeEndpoint(ep) == unit.UpstreamEndpoint }

// isCriguard reports whether ep is criguard's socket.
func isCriguard(ep string) bool { return normalizeEndpoint(ep) == unit.Endpoint }

// toCriguard is the install rewrite: containerd's socket becomes criguard's;
// anything else (CRI-O, a containerd elsewhere) is refused, since the unit
// forwards to containerd's default socket only.
func toCriguard(file string) rewriteFunc {
	return func(key, old string) (string, error) {
		switch {
		case isCriguard(old):
			return old, nil
		case isContainerd(old):
			return unit.Endpoint, nil
		default:
			return "", fmt.Errorf("%s sets %s to %q, which is not containerd's socket (%s): criguard's unit forwards only to that socket; point kubelet at containerd's default socket first or install criguard by hand",
				file, key, old, unit.UpstreamEndpoint)
		}
	}
}

// fromCriguard is the uninstall rewrite: criguard's socket becomes the
// recorded original value (containerd's socket when none was recorded).
func fromCriguard(original map[string]string) rewriteFunc {
	return func(key, old string) (string, error) {
		if !isCriguard(old) {
			return old, nil
		}
		if v := original[key]; v != "" && !isCriguard(v) {
			return v, nil
		}
		return unit.UpstreamEndpoint, nil
	}
}

// --- KubeletConfiguration (YAML or JSON) ---

// configEdit is one scalar to replace in the file's text.
type configEdit struct {
	key      string
	node     *yaml3.Node
	newValue string
}

// editConfig rewrites the endpoint keys of a KubeletConfiguration. Only the
// value's characters change: every other byte, comments and key order
// included, is kept. When addRuntime is set and the file has no
// containerRuntimeEndpoint, the key is appended. found returns the values seen.
// The result is decoded again and compared with the original: it must differ
// in exactly the edited keys, or the edit is refused.
func editConfig(data []byte, rewrite rewriteFunc, addRuntime string) (out []byte, found map[string]string, err error) {
	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse kubelet configuration: %w", err)
	}
	if doc.Kind != yaml3.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml3.MappingNode {
		return nil, nil, fmt.Errorf("kubelet configuration is not a single YAML mapping")
	}
	m := doc.Content[0]
	found = map[string]string{}
	want := map[string]any{} // expected decoded values after the edit
	var edits []configEdit
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml3.ScalarNode || !contains(configKeys, k.Value) {
			continue
		}
		if _, dup := found[k.Value]; dup {
			return nil, nil, fmt.Errorf("kubelet configuration sets %s twice", k.Value)
		}
		if v.Kind != yaml3.ScalarNode {
			return nil, nil, fmt.Errorf("kubelet configuration: %s is not a string", k.Value)
		}
		found[k.Value] = v.Value
		if v.Value == "" {
			continue // unset: kubelet's default or the flag decides
		}
		nv, err := rewrite(k.Value, v.Value)
		if err != nil {
			return nil, nil, err
		}
		if nv != v.Value {
			edits = append(edits, configEdit{key: k.Value, node: v, newValue: nv})
			want[k.Value] = nv
		}
	}
	appendKey := addRuntime != "" && found[keyRuntime] == ""
	if appendKey {
		want[keyRuntime] = addRuntime
	}
	if len(edits) == 0 && !appendKey {
		return data, found, nil
	}
	out, err = editText(data, edits, m, appendKey, addRuntime)
	if err == nil {
		err = sameExcept(data, out, want)
	}
	if err != nil {
		// The text could not be edited in place (multi-line scalars, odd
		// layout): edit the node tree and re-encode. Keys, values and most
		// comments survive; layout may not.
		out, err = editTree(&doc, m, edits, appendKey, addRuntime)
		if err != nil {
			return nil, nil, err
		}
		if err := sameExcept(data, out, want); err != nil {
			return nil, nil, fmt.Errorf("editing kubelet configuration would change more than %s: %w", strings.Join(keysOf(want), ", "), err)
		}
	}
	return out, found, nil
}

// editText replaces each edited scalar in place (same quoting style) and
// appends the runtime key to a block mapping.
func editText(data []byte, edits []configEdit, m *yaml3.Node, appendKey bool, value string) ([]byte, error) {
	lines := strings.SplitAfter(string(data), "\n")
	for _, e := range edits {
		li := e.node.Line - 1
		if li < 0 || li >= len(lines) {
			return nil, fmt.Errorf("%s: line %d out of range", e.key, e.node.Line)
		}
		line := lines[li]
		col := e.node.Column - 1
		if col < 0 || col > len(line) || !isASCII(line[:col]) {
			return nil, fmt.Errorf("%s: column %d not editable", e.key, e.node.Column)
		}
		end, err := scalarEnd(line, col, e.node.Style)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.key, err)
		}
		repl := e.newValue
		switch e.node.Style {
		case yaml3.DoubleQuotedStyle:
			repl = strconv.Quote(e.newValue)
		case yaml3.SingleQuotedStyle:
			repl = "'" + strings.ReplaceAll(e.newValue, "'", "''") + "'"
		case 0:
			if !plainSafe(e.newValue) {
				repl = strconv.Quote(e.newValue)
			}
		default:
			return nil, fmt.Errorf("%s: scalar style %v not editable in place", e.key, e.node.Style)
		}
		lines[li] = line[:col] + repl + line[end:]
	}
	out := strings.Join(lines, "")
	if appendKey {
		if m.Style&yaml3.FlowStyle != 0 || m.Column != 1 {
			return nil, fmt.Errorf("configuration is not a block mapping")
		}
		if strings.Contains(out, "\n---") || strings.HasPrefix(out, "---") && strings.Count(out, "---") > 1 {
			return nil, fmt.Errorf("configuration has several documents")
		}
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += keyRuntime + ": " + strconv.Quote(value) + "\n"
	}
	return []byte(out), nil
}

// scalarEnd returns the byte offset just past the scalar starting at col.
func scalarEnd(line string, col int, style yaml3.Style) (int, error) {
	switch style {
	case yaml3.DoubleQuotedStyle:
		for i := col + 1; i < len(line); i++ {
			switch line[i] {
			case '\\':
				i++
			case '"':
				return i + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated double-quoted value")
	case yaml3.SingleQuotedStyle:
		for i := col + 1; i < len(line); i++ {
			if line[i] == '\'' {
				if i+1 < len(line) && line[i+1] == '\'' {
					i++
					continue
				}
				return i + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated single-quoted value")
	case 0:
		end := len(strings.TrimRight(line, "\r\n"))
		if i := strings.Index(line[col:], " #"); i >= 0 && col+i < end {
			end = col + i
		}
		// Inside a flow mapping a plain scalar ends at , or }.
		if i := strings.IndexAny(line[col:end], ",}"); i >= 0 {
			end = col + i
		}
		return len(strings.TrimRight(line[:end], " \t")), nil
	}
	return 0, fmt.Errorf("scalar style %v not editable in place", style)
}

func editTree(doc *yaml3.Node, m *yaml3.Node, edits []configEdit, appendKey bool, value string) ([]byte, error) {
	for _, e := range edits {
		e.node.Value = e.newValue
		e.node.Tag = "!!str"
	}
	if appendKey {
		var replaced bool
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == keyRuntime {
				m.Content[i+1].Value, m.Content[i+1].Tag, m.Content[i+1].Kind = value, "!!str", yaml3.ScalarNode
				replaced = true
			}
		}
		if !replaced {
			m.Content = append(m.Content,
				&yaml3.Node{Kind: yaml3.ScalarNode, Tag: "!!str", Value: keyRuntime},
				&yaml3.Node{Kind: yaml3.ScalarNode, Tag: "!!str", Value: value})
		}
	}
	var buf bytes.Buffer
	enc := yaml3.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode kubelet configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode kubelet configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// sameExcept decodes both configurations and requires after == before with
// the keys in want set to their values.
func sameExcept(before, after []byte, want map[string]any) error {
	var b, a map[string]any
	if err := yaml.Unmarshal(before, &b); err != nil {
		return fmt.Errorf("decode original: %w", err)
	}
	if err := yaml.Unmarshal(after, &a); err != nil {
		return fmt.Errorf("decode edited: %w", err)
	}
	for k, v := range want {
		b[k] = v
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("decoded result differs outside the edited keys")
	}
	return nil
}

// --- environment files with kubelet flags (kubeadm-flags.env, /etc/default/kubelet) ---

// flagRE finds --container-runtime-endpoint / --image-service-endpoint with
// their value (=value or a separate word), inside or outside quotes.
var flagRE = regexp.MustCompile(`(^|[\s"'=])--(` + flagRuntime + `|` + flagImage + `)(=|[ \t]+)([^\s"'\\]+)`)

// configFlagRE finds kubelet's --config flag.
var configFlagRE = regexp.MustCompile(`(^|[\s"'=])--config(=|[ \t]+)([^\s"'\\]+)`)

// editEnv rewrites endpoint flags in a systemd EnvironmentFile, changing only
// the flags' values. found maps config keys to the values seen (the last one
// wins, as it does for kubelet's flag parser within one variable).
func editEnv(data []byte, rewrite rewriteFunc) (out []byte, found map[string]string, err error) {
	found = map[string]string{}
	lines := strings.SplitAfter(string(data), "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, ";") {
			continue
		}
		var b strings.Builder
		last := 0
		for _, mi := range flagRE.FindAllStringSubmatchIndex(line, -1) {
			flag := line[mi[4]:mi[5]]
			old := line[mi[8]:mi[9]]
			key := flagKey[flag]
			found[key] = old
			nv, rerr := rewrite(key, old)
			if rerr != nil {
				return nil, nil, rerr
			}
			b.WriteString(line[last:mi[8]])
			b.WriteString(nv)
			last = mi[9]
		}
		b.WriteString(line[last:])
		lines[i] = b.String()
	}
	return []byte(strings.Join(lines, "")), found, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func keysOf(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// plainRE is what the installer writes unquoted: socket endpoints.
var plainRE = regexp.MustCompile(`^[A-Za-z0-9_./-]+(://[A-Za-z0-9_./-]*)?$`)

// plainSafe reports whether s can be written as a plain YAML scalar that
// decodes back to the same string (the decode check confirms it anyway).
func plainSafe(s string) bool { return plainRE.MatchString(s) }
