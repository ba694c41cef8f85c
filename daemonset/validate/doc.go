// Package validate checks criguard's Kubernetes manifests offline: its test
// renders daemonset/ and daemonset/uninstall with kustomize (the krusty
// library, as `kustomize build` does), decodes every object strictly with
// client-go's scheme (unknown or duplicate fields fail), and checks what the
// installer needs of them.
package validate
