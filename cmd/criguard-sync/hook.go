package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/criguard/criguard/daemonset/uninstallhook"
)

// hookMain runs `criguard-sync remove-daemonset|wait-daemonset NAME` and
// returns the exit code.
func hookMain(cmd string, args []string) int {
	fs := flag.NewFlagSet("criguard-sync "+cmd, flag.ContinueOnError)
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "the DaemonSet's namespace (default $POD_NAMESPACE)")
	timeout := fs.Duration("timeout", 4*time.Minute, "give up (and fail the hook) after this long")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: the pod's service account)")
	thenDelete := fs.Bool("then-delete", false, "wait-daemonset: once it is Ready everywhere, delete the DaemonSet and wait until its pods are gone")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if fs.NArg() != 1 || *namespace == "" {
		logger.Error("usage: criguard-sync " + cmd + " --namespace NS [--timeout D] DAEMONSET")
		return 2
	}
	name := fs.Arg(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := runHook(ctx, cmd, *kubeconfig, *namespace, name, *thenDelete, logger); err != nil {
		logger.Error(cmd+" failed, so helm uninstall stops here and the release stays. "+failureAdvice(cmd)+
			" See `kubectl -n "+*namespace+" describe daemonset "+name+"` and its pods' logs; once fixed, run helm uninstall again.",
			"daemonset", name, "err", err)
		return 1
	}
	logger.Info(cmd+" done", "daemonset", name)
	return 0
}

// failureAdvice says what state a failed hook leaves the nodes in.
func failureAdvice(cmd string) string {
	if cmd == "remove-daemonset" {
		return "The installer DaemonSet is being deleted (its remaining pods are named below); nothing was uninstalled yet, and criguard still enforces on every node."
	}
	return "The uninstall DaemonSet stays and goes on restoring the nodes named below; the others are back on containerd."
}

func runHook(ctx context.Context, cmd, kubeconfig, namespace, name string, thenDelete bool, logger *slog.Logger) error {
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("API client: %w", err)
	}
	h := uninstallhook.Hook{DaemonSets: cs.AppsV1().DaemonSets(namespace), Pods: cs.CoreV1().Pods(namespace), Logger: logger}
	if cmd == "remove-daemonset" {
		return h.Remove(ctx, name)
	}
	if err := h.WaitReady(ctx, name); err != nil || !thenDelete {
		return err
	}
	return h.Remove(ctx, name)
}
