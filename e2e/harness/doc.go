// Package harness starts real node components for criguard's end-to-end tests:
// an OCI registry, containerd (2.x built from the Go module proxy, or Debian's 1.6)
// with runc, criguard itself, crictl, a standalone kubelet and the cosign CLI.
//
// It is a plain Go package imported only by tests built with the `e2e` tag (and by
// the e2e/demo program). Everything it starts is torn down by t.Cleanup: processes
// (including containerd-shim-runc-v2 and the containers it ran), mounts under the
// temporary root, sockets and temporary directories. Every component gets its own
// short temporary directory (/tmp/cg-*) and free loopback ports, so a second run
// right after the first passes and different tests may run in parallel.
//
// Prerequisites: root, and the tools installed by `make tools` (e2e/tools/install.sh)
// into $CRIGUARD_E2E_CACHE/bin (default <repo>/.cache/e2e/bin). A missing
// prerequisite FAILS the test with a hint; nothing here calls t.Skip.
//
// # API
//
// All functions take a T: *testing.T and *testing.B satisfy it; Standalone returns
// one for programs (the demo).
//
//	harness.RequireRoot(t)                    // fails unless euid 0
//	harness.Tool(t, "crictl") string          // path from .cache/e2e/bin, then PATH; fails with the `make tools` hint
//	harness.CriguardBinary(t) string          // $CRIGUARD_E2E_BINARY, else built from ./cmd/criguard into the cache (reused while newer than every non-test .go file, go.mod, go.sum)
//	harness.RepoRoot(t) string                // directory holding go.mod
//	harness.CacheDir(t) string                // $CRIGUARD_E2E_CACHE or <repo>/.cache/e2e
//	(fixtures: testdata/cosign and testdata/sigstore, through internal/fixtureregistry)
//	harness.TempDir(t, prefix) string         // short /tmp/cg-<prefix>-* dir (unix socket paths stay < 108 bytes), removed at cleanup
//	harness.FreePort(t) int                   // a free 127.0.0.1 TCP port
//
// Registry (go-containerregistry's pkg/registry, in process, plain HTTP on 127.0.0.1):
//
//	r := harness.StartRegistry(t, referrers bool) // r.Host == "127.0.0.1:PORT"
//	r.Ref(repo, tagOrDigest) string              // "127.0.0.1:PORT/repo:tag" or "...@sha256:..."
//	r.PushImage(t, repo, tag, opts...) string     // digest "sha256:..."; busybox-static rootfs, linux/amd64,
//	                                              // entrypoint ["sleep","infinity"]; a unique layer per call, so
//	                                              // every push gets a different digest
//	    opts: harness.WithEntrypoint(...), harness.WithCmd(...), harness.WithFile(path, content),
//	          harness.WithPlatform(os, arch), harness.WithLabel(k, v)
//	r.PushPause(t) string                         // "127.0.0.1:PORT/pause:3.10" (busybox sleep infinity)
//	r.LoadCosignFixtures(t) *Fixtures             // testdata/cosign pushed byte for byte: blobs, manifests
//	                                              // by digest (index members first), then tags; Fixtures.Dir, Fixtures.Keys
//	                                              // ("a","b","rsa" -> .pub path), Fixtures.Ref(repo, tag),
//	                                              // Fixtures.Digest(repo, tag), Fixtures.Tags
//	r.Manifest(t, ref) (mediaType string, body []byte) // raw GET, for assertions
//
// containerd:
//
//	c := harness.StartContainerd(t, harness.ContainerdOptions{Version: "2" /* or "1.6" */, Registry: r})
//	c.Socket  // absolute path of the CRI/containerd gRPC socket; c.Endpoint() == "unix://"+c.Socket
//	c.Root, c.State, c.Dir, c.RuncRoot, c.Registry, c.Version, c.Logs() string
//	c.Restart(t)  // SIGTERM, wait, start again on the same root/state/socket (containers keep running)
//	c.Stop(t)     // SIGTERM and wait; cleanup does this plus pod/shim/mount removal
//	Options: Version ("2" default), Registry (nil: one is started), PauseImage (default r.PushPause),
//	ExtraConfig (TOML appended to the generated config).
//	The config sets restrict_oom_score_adj, the pinned pause image, a certs.d hosts.toml for the
//	plain-HTTP registry, a private runc root, NRI off, and (2.x) the v2 shim first in PATH.
//
// criguard:
//
//	g := harness.StartCriguard(t, c.Socket, extraArgs...) // criguard serve --listen unix://<tmp>/criguard.sock --upstream unix://<c.Socket> extraArgs...
//	                                                      // (+ --metrics-address 127.0.0.1:<free> unless extraArgs set it; g.MetricsAddress)
//	g.Socket, g.Endpoint(), g.Logs() string, g.Stop(t) (SIGTERM), g.Kill(t) (SIGKILL), g.Restart(t)
//	g.Exited() bool, g.ExitCode(timeout) int
//	harness.RunCriguard(t, args...) (stdout, stderr string, exitCode int) // one-shot subcommand (verify, policy, version, ...)
//	harness.RunCriguardEnv(t, env []string, args...)                     // the same with extra "K=V" environment
//	fwd := harness.StartBareForwarder(t, upstreamSocket, "plain"|"criproxy") // benchmark floor: raw unary forwarding only,
//	                                                                        // its own process (e2e/harness/bareforwarder)
//
// CRI clients:
//
//	harness.Crictl(t, endpoint, args...) (stdout string, err error) // err carries stderr; endpoint "unix:///..." or a path
//	harness.MustCrictl(t, endpoint, args...) string                // fails the test on error
//	harness.DialCRI(t, socketOrEndpoint) *grpc.ClientConn           // for typed calls and benchmarks
//	harness.HostNetworkPod(name, namespace, logDir string) string   // crictl pod-config JSON with network = NODE
//	harness.ContainerConfig(name, image string, cmd ...string) string // crictl container-config JSON
//
// kubelet (standalone, static pods only):
//
//	k := harness.StartKubelet(t, harness.KubeletOptions{RuntimeEndpoint: g.Endpoint()})
//	k.StaticPodDir, k.RootDir, k.NodeName, k.Logs() string, k.Stop(t)
//	k.WriteStaticPod(t, name, yaml) // atomically drops <name>.yaml into StaticPodDir; k.RemoveStaticPod(t, name)
//	k.Exited() bool
//	harness.StaticPod(name, namespace, image string, command ...string) string // hostNetwork pod manifest, container "main"
//	Options: RuntimeEndpoint, ImageEndpoint (default RuntimeEndpoint), StaticPodDir (default a temp dir),
//	NodeName (default unique), ExtraConfig (YAML lines appended to the KubeletConfiguration).
//	A standalone KubeletConfiguration; free ports; --root-dir and podLogsDir in temp dirs.
//	Two host paths kubelet hard-codes remain: /var/lib/kubelet/device-plugins/kubelet.sock
//	(shared by parallel kubelets, harmless for static pods, left in place) and the
//	/var/log/containers symlinks (removed at cleanup for this kubelet's pods).
//
// cosign CLI (offline: no transparency log, no signing config):
//
//	cs := harness.Cosign(t)
//	key, pub := cs.GenerateKeyPair(t, dir)     // empty password
//	key, pub := cs.ImportKeyPair(t, dir, pemPrivateKey) // e.g. RSA
//	cs.Sign(t, key, ref, legacy bool)          // legacy: the sha256-<hex>.sig tag; else a Sigstore bundle referrer
//	cs.Verify(t, pub, ref) (stdout string, err error)
//	cs.Run(t, args...) (stdout, stderr string, err error)
//
// Helpers:
//
//	harness.Eventually(t, timeout, what string, func() error) // polls until nil; fails with the last error
//	harness.WriteFile(t, path, content)
//	harness.Standalone(ctx, name) *Session // a T for programs; Session.Close runs the cleanups, Fatalf cleans up and exits 1
//
// Benchmarks that report percentiles take a fixed number of samples per b.N
// iteration (see e2e/bench_test.go); `make bench` runs them with -benchtime 1x.
//
// Package-e2e tests share one Go package: prefix helpers with your area
// (proxy*, bench*, verify*, enforce*, install*) so names do not collide.
//
// Images from testdata/cosign have an empty os/architecture in their
// config: containerd 2.4 pulls their single-manifest images (tag or digest) but
// refuses demo/multi (an index without platform fields: "no match for
// platform in manifest"). See Fixtures.
package harness
