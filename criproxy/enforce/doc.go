// Package enforce is the enforcement half of criguard's CRI proxy: an Enforcer
// is the forward.Guard that lets PullImage (pull.go) and CreateContainer
// (create.go) through only for image digests the policy allows.
//
// A pull is resolved to a digest, judged, pulled as name@digest and tagged in
// containerd; a create is judged on the repository digests containerd holds for
// the image (and its image volumes) and handed to containerd by the judged image
// ID. Denials carry forward.DeniedPrefix, so kubelet shows the reason on the pod.
// Credentials from kubelet's pulls (creds.go), the names containerd gave an image
// ID (imagecache.go), and decision metrics (metrics.go) live here too.
package enforce
