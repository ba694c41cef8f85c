// Package uninstallhook is what lets `helm uninstall` alone put every node
// back on containerd. Helm's pre-delete hooks run it twice, around the
// uninstall DaemonSet the chart creates as a hook:
//
//  1. Remove deletes the installer DaemonSet and waits until its pods are
//     gone, so that no installer resync points kubelet at criguard again
//     while the nodes are being restored.
//  2. WaitReady waits until the uninstall DaemonSet is Ready on every node
//     it is scheduled on: its readiness probe passes only once nothing of the
//     install is left on that node.
//
// Either failing fails the hook, and Helm then stops the uninstall: a node
// that could not be restored keeps enforcing, never the other way round.
package uninstallhook
