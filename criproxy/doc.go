// Package criproxy holds no code of its own: it names the layer of criguard that
// speaks CRI. Its packages are forward (the gRPC server that forwards every CRI
// call to containerd as raw bytes, knowing nothing of policy), enforce (the
// Guard that judges PullImage and CreateContainer against the policy) and
// observe (/metrics, /healthz, /readyz). See docs/architecture.md.
package criproxy
