package nodeinstall

import (
	"strings"
	"testing"

	"github.com/criguard/criguard/systemd/unit"
)

func TestEditConfig(t *testing.T) {
	const cg = unit.Endpoint
	cases := []struct {
		name, in, want, add, err string
	}{
		{
			name: "plain value with comment kept",
			in:   "# head\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock   # the runtime\nmaxPods: 10 # pods\n",
			want: "# head\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: " + cg + "   # the runtime\nmaxPods: 10 # pods\n",
		},
		{
			name: "double quoted",
			in:   "containerRuntimeEndpoint: \"unix:///var/run/containerd/containerd.sock\"\nx: 1\n",
			want: "containerRuntimeEndpoint: \"" + cg + "\"\nx: 1\n",
		},
		{
			name: "single quoted, image endpoint too",
			in:   "imageServiceEndpoint: 'unix:///run/containerd/containerd.sock'\ncontainerRuntimeEndpoint: /run/containerd/containerd.sock\n",
			want: "imageServiceEndpoint: '" + cg + "'\ncontainerRuntimeEndpoint: " + cg + "\n",
		},
		{
			name: "JSON configuration",
			in:   `{"kind":"KubeletConfiguration","containerRuntimeEndpoint":"unix:///run/containerd/containerd.sock","maxPods":3}` + "\n",
			want: `{"kind":"KubeletConfiguration","containerRuntimeEndpoint":"` + cg + `","maxPods":3}` + "\n",
		},
		{
			name: "missing key appended",
			add:  cg,
			in:   "kind: KubeletConfiguration\nmaxPods: 3 # keep\n",
			want: "kind: KubeletConfiguration\nmaxPods: 3 # keep\ncontainerRuntimeEndpoint: \"" + cg + "\"\n",
		},
		{
			name: "missing key appended without trailing newline",
			add:  cg,
			in:   "kind: KubeletConfiguration",
			want: "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: \"" + cg + "\"\n",
		},
		{
			name: "empty value counts as missing",
			add:  cg,
			in:   "containerRuntimeEndpoint: \"\"\nkind: KubeletConfiguration\n",
		},
		{
			name: "already criguard: unchanged",
			in:   "containerRuntimeEndpoint: " + cg + "\n",
			want: "containerRuntimeEndpoint: " + cg + "\n",
		},
		{
			name: "nested key with the same name untouched",
			in:   "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nextra:\n  containerRuntimeEndpoint: keep-me\n",
			want: "containerRuntimeEndpoint: " + cg + "\nextra:\n  containerRuntimeEndpoint: keep-me\n",
		},
		{name: "CRI-O refused", in: "containerRuntimeEndpoint: unix:///var/run/crio/crio.sock\n", err: "not containerd's socket"},
		{name: "duplicate key refused", in: "containerRuntimeEndpoint: a\ncontainerRuntimeEndpoint: b\n", err: ""},
		{name: "not a string", in: "containerRuntimeEndpoint: [a]\n", err: "not a string"},
		{name: "not YAML", in: "a: [\n", err: "parse kubelet configuration"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := editConfig([]byte(c.in), toCriguard("config.yaml"), c.add)
			if c.err != "" || strings.Contains(c.name, "refused") {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				// Only the decoded result is specified.
				if err := sameExcept([]byte(c.in), out, map[string]any{keyRuntime: cg}); err != nil {
					t.Fatalf("%v:\n%s", err, out)
				}
				return
			}
			if string(out) != c.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, c.want)
			}
			// And back: uninstall's rewrite restores the original text when the
			// key existed.
			if c.add == "" && c.in != c.want {
				back, _, err := editConfig(out, fromCriguard(nil), "")
				if err != nil {
					t.Fatal(err)
				}
				if err := sameExcept([]byte(c.in), back, map[string]any{}); err != nil && !strings.Contains(c.in, "/var/run") && !strings.Contains(c.in, ": /run") {
					t.Errorf("round trip: %v\n%s", err, back)
				}
			}
		})
	}
}

func TestEditConfigFallsBackToTree(t *testing.T) {
	// A block scalar cannot be replaced in place; the tree is re-encoded and
	// the result still decodes to the same configuration with the new value.
	in := "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: >-\n  unix:///run/containerd/containerd.sock\nmaxPods: 3\n"
	out, _, err := editConfig([]byte(in), toCriguard("c"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := sameExcept([]byte(in), out, map[string]any{keyRuntime: unit.Endpoint}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestEditEnv(t *testing.T) {
	const cg = unit.Endpoint
	cases := []struct {
		name, in, want, err string
	}{
		{
			name: "kubeadm flags",
			in:   `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock --node-ip=1.2.3.4"` + "\n",
			want: `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=` + cg + ` --node-ip=1.2.3.4"` + "\n",
		},
		{
			name: "separate value, single quotes, both flags, comments kept",
			in:   "# note --container-runtime-endpoint=unix:///x\nKUBELET_EXTRA_ARGS='--max-pods=3 --container-runtime-endpoint /var/run/containerd/containerd.sock --image-service-endpoint=unix:///run/containerd/containerd.sock'\n",
			want: "# note --container-runtime-endpoint=unix:///x\nKUBELET_EXTRA_ARGS='--max-pods=3 --container-runtime-endpoint " + cg + " --image-service-endpoint=" + cg + "'\n",
		},
		{
			name: "flag at the end of an unquoted value",
			in:   "KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
			want: "KUBELET_EXTRA_ARGS=--container-runtime-endpoint=" + cg,
		},
		{name: "no flags", in: "KUBELET_EXTRA_ARGS=\"--max-pods=3\"\n", want: "KUBELET_EXTRA_ARGS=\"--max-pods=3\"\n"},
		{name: "other runtime", in: "A=\"--container-runtime-endpoint=unix:///run/crio/crio.sock\"\n", err: "not containerd's socket"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := editEnv([]byte(c.in), toCriguard("f"))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != c.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, c.want)
			}
		})
	}
}

func TestNormalizeEndpoint(t *testing.T) {
	for in, want := range map[string]bool{
		"unix:///run/containerd/containerd.sock":               true,
		"/run/containerd/containerd.sock":                      true,
		"unix:///var/run/containerd/containerd.sock":           true,
		"unix:///run/containerd/../containerd/containerd.sock": true,
		"unix:///run/containerd/containerd.sock.evil":          false,
		"tcp://127.0.0.1:1234":                                 false,
	} {
		if got := isContainerd(in); got != want {
			t.Errorf("isContainerd(%q) = %v", in, got)
		}
	}
}

func TestDescribeEdit(t *testing.T) {
	cases := []struct {
		e    fileEdit
		want string
	}{
		{fileEdit{kind: kindEnv, found: map[string]string{keyRuntime: "unix:///run/containerd/containerd.sock"}},
			"kubelet --container-runtime-endpoint unix:///run/containerd/containerd.sock -> " + unit.Endpoint},
		{fileEdit{kind: kindConfig, added: true, found: map[string]string{keyRuntime: "", keyImage: ""}},
			"kubelet containerRuntimeEndpoint (unset) -> " + unit.Endpoint},
		{fileEdit{kind: kindConfig, found: map[string]string{keyRuntime: unit.Endpoint, keyImage: "/run/containerd/containerd.sock"}},
			"kubelet imageServiceEndpoint /run/containerd/containerd.sock -> " + unit.Endpoint},
	}
	for _, c := range cases {
		if got := c.e.describe(); got != c.want {
			t.Errorf("describe = %q, want %q", got, c.want)
		}
	}
}
