// Command criguard-sync runs beside criguard's installer on every node (a
// native sidecar of the installer DaemonSet): it writes ImagePolicy (and
// Kyverno) objects from the API server into the node's policy directory, and
// relays the node's loopback criguard /metrics. Its remove-daemonset and
// wait-daemonset commands are the Helm chart's pre-delete hooks
// (daemonset/uninstallhook). It is a separate binary so
// that client-go stays out of the node binary. main only wires flags to
// daemonset/policysync.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/criguard/criguard/daemonset/policysync"
	"github.com/criguard/criguard/verifier/policy"
)

// nodePolicyDir is where the installer puts the files this writes, on the
// node: relative key paths in a policy resolve against it.
const nodePolicyDir = "/etc/criguard/policy"

type config struct {
	listen, metricsUpstream, policyOut, kubeconfig, node string
	kyverno, reportStatus                                bool
	resync                                               time.Duration
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "remove-daemonset" || os.Args[1] == "wait-daemonset") {
		os.Exit(hookMain(os.Args[1], os.Args[2:]))
	}
	var c config
	fs := flag.NewFlagSet("criguard-sync", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", ":9465", "address serving /healthz, /readyz and (with --metrics-upstream) /metrics")
	fs.StringVar(&c.metricsUpstream, "metrics-upstream", "", "criguard's metrics URL on this node to relay (e.g. http://127.0.0.1:9464/metrics); empty serves no /metrics")
	fs.StringVar(&c.policyOut, "policy-out", "", "directory to write policy objects into (the installer's --policy-dir); empty syncs no policies")
	fs.BoolVar(&c.kyverno, "kyverno", false, "also write Kyverno ClusterPolicy/Policy objects with verifyImages rules, when Kyverno's CRDs exist")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default: the pod's service account)")
	fs.StringVar(&c.node, "node", os.Getenv("NODE_NAME"), "this node's name, for Events and its entry of ImagePolicies' status.nodes (default $NODE_NAME)")
	fs.BoolVar(&c.reportStatus, "report-status", true, "apply this node's entry of each ImagePolicy's status.nodes (one apply per node and N x N watch events per policy change on N nodes; turn off on large clusters, Events and metrics remain)")
	fs.DurationVar(&c.resync, "resync", time.Minute, "rewrite the policy directory from the watch caches at least this often")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, logger); err != nil {
		logger.Error("criguard-sync stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, logger *slog.Logger) error {
	g, ctx := errgroup.WithContext(ctx)
	relay := policysync.Relay{Upstream: c.metricsUpstream, Ready: func() bool { return true }}
	if c.policyOut != "" {
		s, err := newSyncer(c, logger)
		if err != nil {
			return err
		}
		relay.Ready = s.Ready
		g.Go(func() error { return s.Run(ctx) })
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	srv := &http.Server{Handler: relay.Handler(), ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

func newSyncer(c config, logger *slog.Logger) (*policysync.Syncer, error) {
	rc, err := restConfig(c.kubeconfig)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	cs, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, err
	}
	return policysync.New(policysync.Options{
		Client: dyn, Dir: c.policyOut, Kyverno: c.kyverno, KyvernoInstalled: policysync.KyvernoInstalled(disc),
		Events: policysync.ClientsetEvents{Client: cs}, Node: c.node, ReportStatus: c.reportStatus, Resync: c.resync, Logger: logger,
		// As criguard will read the file on the node: key files under
		// /etc/criguard/keys (the chart mounts the keys there in this pod too).
		Check: func(name string, data []byte) error { return policy.Check(path.Join(nodePolicyDir, name), data) },
	})
}

// restConfig is the kubeconfig file's, else the pod's service account.
func restConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("API server configuration: %w", err)
	}
	rc.UserAgent = "criguard-sync"
	return rc, nil
}
