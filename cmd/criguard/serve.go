package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/criguard/criguard/criproxy/enforce"
	"github.com/criguard/criguard/criproxy/forward"
	"github.com/criguard/criguard/criproxy/observe"
	"github.com/criguard/criguard/verifier/cosign"
	"github.com/criguard/criguard/verifier/policy"
)

const (
	defaultListen   = "unix:///run/criguard/criguard.sock"
	defaultUpstream = "unix:///run/containerd/containerd.sock"
	// probeTimeout bounds the startup CRI Version check (an upstream that
	// accepts connections but never answers); a missing socket fails at once.
	probeTimeout = 3 * time.Second
	// probeInterval paces the background re-check while the upstream is down.
	probeInterval = 2 * time.Second
	// defaultMetricsAddress is loopback: metrics and health are for the node's
	// own scraper or a port-forward, not the network.
	defaultMetricsAddress = "127.0.0.1:9464"
)

// serveConfig is everything `criguard serve` is configured with. Add a field here
// and its flag in register; buildGuard sees the whole config.
type serveConfig struct {
	listen       string
	upstream     string
	logFormat    string
	logLevel     string
	drainTimeout time.Duration
	// policy is the policy file or directory; "" serves without enforcement.
	policy string
	// metricsAddress serves /metrics, /healthz and /readyz; "" disables them.
	metricsAddress string
	// trustedRoot is the Sigstore trusted root file; "" means the embedded
	// public-good root.
	trustedRoot string
}

func (c *serveConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.listen, "listen", defaultListen, "CRI socket to serve kubelet on (unix:///path or a bare path); created mode 0660")
	fs.StringVar(&c.upstream, "upstream", defaultUpstream, "container runtime's CRI socket to forward to (unix:///path or a bare path)")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error (debug logs every CRI call)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", forward.DefaultDrainTimeout, "on SIGTERM, how long in-flight CRI calls may finish before they are cut")
	fs.StringVar(&c.policy, "policy", "", "image policy: a YAML file or a directory of them (criguard ImagePolicy, Kyverno ClusterPolicy/Policy); "+
		"reloaded on change and on SIGHUP. Without it every image passes unverified")
	fs.StringVar(&c.trustedRoot, "trusted-root", "", "Sigstore trusted root (trusted_root.json) that transparency-log entries, timestamps and keyless certificates are verified against; "+
		"reloaded with the policy (a broken file keeps the last good one). Default: the embedded Sigstore public-good root")
	fs.StringVar(&c.metricsAddress, "metrics-address", defaultMetricsAddress, "host:port serving /metrics, /healthz and /readyz (empty disables); keep it on loopback")
}

// serveDeps is what serve hands to buildGuard.
type serveDeps struct {
	logger *slog.Logger
	// upstream is the runtime connection the proxy forwards on; typed clients
	// (containerd.NewWithConn, runtimeapi clients) may share it.
	upstream *grpc.ClientConn
	// group runs background tasks for the life of serve (a metrics listener, a
	// policy watcher): a task returning an error stops serve with that error.
	// Tasks must return once the group's context (buildGuard's ctx) ends.
	group *errgroup.Group
	// registry holds every layer's metrics, served on --metrics-address.
	registry *prometheus.Registry
}

// buildGuard returns the Guard that judges PullImage and CreateContainer, or nil
// for a pure pass-through proxy (no --policy). ctx ends when serve stops.
//
// It loads the policy (an invalid one is fatal: there is nothing to fall back
// on), starts the reload loop (file watch and SIGHUP) and the metrics listener
// in deps.group, and joins the proxy to the policy engine through the Enforcer.
func buildGuard(ctx context.Context, cfg *serveConfig, deps serveDeps) (forward.Guard, error) {
	log := deps.logger
	if cfg.trustedRoot != "" && cfg.policy == "" {
		return nil, errors.New("--trusted-root needs --policy: without a policy nothing is verified")
	}
	metrics := enforce.NewMetrics(deps.registry)
	var store *policy.Store
	if cfg.policy != "" {
		s, err := policy.NewStore(cfg.policy, policy.StoreOptions{
			Logger:      log,
			OnReload:    func(r policy.ReloadResult) { metrics.PolicyReloaded(r.Err) },
			TrustedRoot: cfg.trustedRoot,
		})
		if err != nil {
			return nil, fmt.Errorf("--policy: %w", err)
		}
		metrics.PolicyReloaded(nil)
		store = s
		log.Info("policy loaded", "path", cfg.policy, "generation", s.Current().Generation, "policies", len(s.Current().Policies))
	}

	reload := forwardSIGHUP(ctx, deps.group, store != nil, log)
	if store != nil {
		deps.group.Go(func() error { store.WatchForever(ctx, reload); return nil })
		deps.group.Go(func() error {
			if err := store.WatchTrustedRoot(ctx); err != nil {
				// SIGHUP still reloads it; only edits go unseen.
				log.Error("trusted root: not watched for changes; send SIGHUP after changing it", "path", cfg.trustedRoot, "error", err)
			}
			return nil
		})
	}

	if cfg.metricsAddress != "" {
		ready := func(ctx context.Context) error {
			if store == nil || store.Current() == nil {
				return errors.New("no policy loaded (criguard runs without --policy)")
			}
			if _, err := forward.Probe(ctx, deps.upstream); err != nil {
				return err
			}
			return nil
		}
		serveMetrics(ctx, cfg.metricsAddress, observe.Handler(deps.registry, ready), deps.group, log)
	}

	if store == nil {
		log.Warn("no --policy: criguard forwards every image unverified")
		return nil, nil
	}
	// The policy's verificationTimeout bounds each verification (the engine
	// sets it per call); the verifier's own limit only backs it up.
	v := cosign.New(cosign.Options{Timeout: policy.MaxTimeout})
	engine := policy.NewEngine(store, v, policy.EngineOptions{Logger: log})
	metrics.WatchCacheSize(engine.CacheLen)
	metrics.WatchSlots(engine.SlotStats)
	tagger, err := enforce.NewContainerdTagger(deps.upstream)
	if err != nil {
		return nil, err
	}
	return enforce.New(enforce.Options{
		Judge:     engine,
		Images:    runtimeapi.NewImageServiceClient(deps.upstream),
		Sandboxes: runtimeapi.NewRuntimeServiceClient(deps.upstream),
		Tagger:    tagger,
		Metrics:   metrics,
		Logger:    log,
	})
}

// forwardSIGHUP turns SIGHUP into reload requests until ctx ends (coalesced:
// one pending request is enough). SIGHUP must never end the process, its
// default; without a policy it is logged and ignored.
func forwardSIGHUP(ctx context.Context, g *errgroup.Group, havePolicy bool, log *slog.Logger) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	g.Go(func() error {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				if !havePolicy {
					log.Warn("SIGHUP ignored: no --policy to reload")
					continue
				}
				select {
				case reload <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	})
	return reload
}

// serveMetrics serves h on addr until ctx ends. A port that cannot be bound is
// logged, not fatal: metrics must not keep kubelet's runtime from serving.
func serveMetrics(ctx context.Context, addr string, h http.Handler, g *errgroup.Group, log *slog.Logger) {
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		log.Error("metrics listener failed; serving CRI without /metrics, /healthz and /readyz", "address", addr, "error", err)
		return
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Info("serving metrics", "address", lis.Addr().String())
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("metrics server shutdown", "error", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "error", err)
		}
		return nil
	})
}

// runServe runs `criguard serve`: exit 0 after a clean shutdown (SIGTERM), 1 on a
// failure, 2 on bad flags.
func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	var cfg serveConfig
	fs := flag.NewFlagSet("criguard serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: criguard serve [flags]\n\nServes CRI v1 for kubelet and forwards every call to the container runtime; with --policy,\nPullImage and CreateContainer pass only for images whose digest the policy allows (SIGHUP reloads it).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "criguard serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	logger, err := newLogger(stderr, cfg.logFormat, cfg.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "criguard serve: %v\n", err)
		return 2
	}
	if cfg.drainTimeout <= 0 {
		fmt.Fprintf(stderr, "criguard serve: --drain-timeout must be positive, got %s\n", cfg.drainTimeout)
		return 2
	}
	for _, ep := range []struct{ flag, value string }{{"--listen", cfg.listen}, {"--upstream", cfg.upstream}} {
		if _, err := forward.SocketPath(ep.value); err != nil {
			fmt.Fprintf(stderr, "criguard serve: %s: %v\n", ep.flag, err)
			return 2
		}
	}
	if err := serve(ctx, &cfg, logger); err != nil {
		logger.Error("criguard serve failed", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg *serveConfig, logger *slog.Logger) error {
	listenPath, err := forward.SocketPath(cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	upstreamPath, err := forward.SocketPath(cfg.upstream)
	if err != nil {
		return fmt.Errorf("--upstream: %w", err)
	}
	conn, err := forward.Dial(ctx, upstreamPath)
	if err != nil {
		return err
	}
	defer conn.Close()

	// A down upstream at startup is not fatal: the proxy has to live through
	// containerd restarts anyway, and kubelet gets the same Unavailable it would
	// get from containerd itself, without boot-order coupling or a crash loop
	// that makes kubelet's socket come and go. A socket that answers without
	// CRI v1 is a wrong --upstream and is fatal.
	upstreamUp, err := probe(ctx, conn, logger)
	if err != nil {
		return err
	}

	// Tasks buildGuard starts end with gctx; a startup failure below cancels
	// it and waits for them.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	fail := func(err error) error {
		cancel()
		return errors.Join(err, g.Wait())
	}
	registry := observe.NewRegistry()
	guard, err := buildGuard(gctx, cfg, serveDeps{logger: logger, upstream: conn, group: g, registry: registry})
	if err != nil {
		return fail(err)
	}
	srv, err := forward.NewServer(forward.Options{Upstream: conn, Guard: guard, Logger: logger, DrainTimeout: cfg.drainTimeout,
		Metrics: forward.NewMetrics(registry)})
	if err != nil {
		return fail(err)
	}
	lis, err := forward.ListenUnix(ctx, listenPath)
	if err != nil {
		return fail(err)
	}
	logger.Info("criguard serving CRI", "version", versionString(), "listen", listenPath,
		"upstream", upstreamPath, "guard", guard != nil)
	if !upstreamUp {
		g.Go(func() error { reprobe(gctx, conn, logger); return nil })
	}
	g.Go(func() error { forward.LogUpstreamState(gctx, conn, logger); return nil })
	g.Go(func() error { return srv.Serve(gctx, lis) })
	err = g.Wait()
	logger.Info("criguard stopped")
	return err
}

// probe checks the upstream once. It returns whether the upstream answered, or
// an error for an upstream that is there but is no CRI v1 runtime.
func probe(ctx context.Context, conn *grpc.ClientConn, logger *slog.Logger) (bool, error) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	v, err := forward.Probe(pctx, conn)
	switch {
	case err == nil:
		logger.Info("upstream answers", "upstream", conn.Target(), "runtime", v.GetRuntimeName(),
			"runtime_version", v.GetRuntimeVersion(), "cri_version", v.GetRuntimeApiVersion())
		return true, nil
	case status.Code(err) == codes.Unimplemented:
		return false, err
	default:
		logger.Error("upstream not answering; serving anyway, CRI calls fail with Unavailable until it does",
			"upstream", conn.Target(), "err", err)
		return false, nil
	}
}

// reprobe re-checks a down upstream until it answers, to log when it does (once;
// the failures were logged at startup). gRPC reconnects by itself; this only
// tells the operator.
func reprobe(ctx context.Context, conn *grpc.ClientConn, logger *slog.Logger) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		v, err := forward.Probe(pctx, conn)
		cancel()
		switch {
		case err == nil:
			logger.Info("upstream answers", "upstream", conn.Target(), "runtime", v.GetRuntimeName(),
				"runtime_version", v.GetRuntimeVersion(), "cri_version", v.GetRuntimeApiVersion())
			return
		case status.Code(err) == codes.Unimplemented:
			logger.Error("upstream is not a CRI v1 runtime; fix --upstream", "upstream", conn.Target(), "err", err)
			return
		}
	}
}

// newLogger builds the slog logger from --log-format and --log-level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
