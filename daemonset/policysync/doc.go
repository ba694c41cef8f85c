// Package policysync brings policies from the API server to a node: it
// watches criguard ImagePolicy objects (and, when Kyverno's CRDs exist,
// Kyverno ClusterPolicy/Policy objects with verifyImages rules) and writes
// one file per object into a host directory that the installer copies to
// /etc/criguard/policy. Files are written atomically; nothing is written
// before the first complete list, nor while the API server cannot be reached,
// and an empty list never empties the directory: the node keeps enforcing
// what it last had. Each change written is reported as an Event on the
// policy object (reason PolicySynced) naming the node and the generation,
// and, on an ImagePolicy, in the node's own entry of status.nodes
// (server-side apply, field manager criguard-sync/NODE; see status.go).
//
// It also relays the node's loopback criguard /metrics (Relay), so that a
// Service can scrape every node while criguard listens on loopback only.
//
// client-go lives here and in cmd/criguard-sync, never in the node binary.
package policysync
