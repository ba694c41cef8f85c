// Package e2e holds criguard's end-to-end tests (build tag `e2e`, root): they
// run real containerd, runc, kubelet and cosign through the harness in
// e2e/harness. Run them with `make e2e`.
package e2e
