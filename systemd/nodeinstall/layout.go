package nodeinstall

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Where kubelet's settings live on the nodes criguard supports.
const (
	// DefaultKubeletConfig is kubeadm's (and kind's) KubeletConfiguration.
	DefaultKubeletConfig = "/var/lib/kubelet/config.yaml"
	// kubeadmInstanceConfig is kubeadm's per-node patch (NodeLocalCRISocket):
	// kubeadm upgrade writes its containerRuntimeEndpoint back into config.yaml.
	kubeadmInstanceConfig = "/var/lib/kubelet/instance-config.yaml"
)

// DefaultKubeletEnvFiles are the EnvironmentFiles that kubeadm's kubelet
// drop-in (10-kubeadm.conf, also on kind nodes) and distribution packages read.
var DefaultKubeletEnvFiles = []string{
	"/var/lib/kubelet/kubeadm-flags.env", // KUBELET_KUBEADM_ARGS, written by kubeadm init/join
	"/etc/default/kubelet",               // KUBELET_EXTRA_ARGS (Debian, Ubuntu, kind)
	"/etc/sysconfig/kubelet",             // KUBELET_EXTRA_ARGS (RPM distributions)
}

// kubeletUnitDirs are searched for kubelet.service and kubelet.service.d/*.conf.
var kubeletUnitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

var envFileRE = regexp.MustCompile(`(?m)^\s*EnvironmentFile\s*=\s*-?(\S+)\s*$`)

// layout is where this node's kubelet takes its endpoint from.
type layout struct {
	Config         string   // KubeletConfiguration file
	InstanceConfig string   // kubeadm's instance-config.yaml (edited only if present)
	EnvFiles       []string // EnvironmentFiles holding kubelet flags
}

// discover finds kubelet's configuration file and flag files from its systemd
// unit and drop-ins. A unit that passes an endpoint flag itself (not through an
// EnvironmentFile) is refused: the installer edits only files it can restore.
func discover(h *host, configOverride string, envOverride []string) (layout, error) {
	l := layout{Config: configOverride, InstanceConfig: kubeadmInstanceConfig}
	envs := map[string]bool{}
	for _, e := range DefaultKubeletEnvFiles {
		envs[e] = true
	}
	var configs []string
	for _, dir := range kubeletUnitDirs {
		files := []string{path.Join(dir, "kubelet.service")}
		dropins, err := h.readDirFiles(path.Join(dir, "kubelet.service.d"))
		if err != nil {
			return l, err
		}
		for _, d := range dropins {
			if strings.HasSuffix(d, ".conf") {
				files = append(files, path.Join(dir, "kubelet.service.d", d))
			}
		}
		for _, f := range files {
			b, ok, err := h.readFile(f, maxHostFile)
			if err != nil {
				return l, err
			}
			if !ok {
				continue
			}
			text := stripComments(string(b))
			if m := flagRE.FindStringSubmatch(text); m != nil {
				return l, fmt.Errorf("kubelet's unit file %s passes --%s itself: the installer only edits kubelet's configuration file and EnvironmentFiles; move the flag to %s or to containerRuntimeEndpoint in %s",
					f, m[2], DefaultKubeletEnvFiles[1], DefaultKubeletConfig)
			}
			for _, m := range envFileRE.FindAllStringSubmatch(text, -1) {
				envs[m[1]] = true
			}
			for _, m := range configFlagRE.FindAllStringSubmatch(text, -1) {
				configs = append(configs, m[3])
			}
		}
	}
	if envOverride != nil {
		envs = map[string]bool{}
		for _, e := range envOverride {
			envs[e] = true
		}
	}
	for e := range envs {
		l.EnvFiles = append(l.EnvFiles, path.Clean(e))
	}
	sort.Strings(l.EnvFiles)
	if l.Config == "" {
		// --config may also sit in an EnvironmentFile.
		for _, e := range l.EnvFiles {
			b, ok, err := h.readFile(e, maxHostFile)
			if err != nil {
				return l, err
			}
			if ok {
				for _, m := range configFlagRE.FindAllStringSubmatch(stripComments(string(b)), -1) {
					configs = append(configs, m[3])
				}
			}
		}
		configs = uniq(configs)
		switch len(configs) {
		case 0:
			l.Config = DefaultKubeletConfig
		case 1:
			l.Config = path.Clean(configs[0])
		default:
			return l, fmt.Errorf("kubelet's units name several --config files (%s): pass --kubelet-config", strings.Join(configs, ", "))
		}
	}
	return l, nil
}

func stripComments(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") || strings.HasPrefix(t, ";") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		x = path.Clean(x)
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
