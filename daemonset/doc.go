// Package daemonset holds criguard's Kubernetes manifests (kustomize): the
// installer DaemonSet with its starter policy, and the uninstaller in
// uninstall/. Its test checks that the starter policy loads and keeps a fresh
// kind cluster's own images running; validate/ (a module of its own) renders
// the manifests and decodes them strictly with client-go.
package daemonset
