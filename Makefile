# criguard: build, test and measure. `make test` is what CI runs (as root).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/criguard
E2E_CACHE ?= $(CURDIR)/.cache/e2e
export CRIGUARD_E2E_CACHE := $(E2E_CACHE)
E2E_TIMEOUT ?= 75m
# The e2e harness runs the criguard that `make build` made (it builds its own
# copy into the cache when run by plain `go test`).
E2E_ENV := CRIGUARD_E2E_BINARY=$(CURDIR)/$(BIN)
FUZZTIME ?= 20s

.PHONY: all build unit e2e test tools bench demo fuzz e2e-kind vet clean

include charts/chart.mk
include daemonset/manifests.mk

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/criguard
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/criguard-sync ./cmd/criguard-sync

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	@# Folders show the layers: no package imports its parent folder's package.
	@bad=0; for pkg in $$($(GO) list ./...) $$($(GO) list -tags e2e ./e2e/...); do \
	  parent=$$(dirname $$pkg); \
	  if $(GO) list -tags e2e -f '{{join .Imports "\n"}}{{"\n"}}{{join .TestImports "\n"}}{{"\n"}}{{join .XTestImports "\n"}}' $$pkg | grep -qx "$$parent"; then \
	    echo "layering: $$pkg imports its parent folder's package $$parent"; bad=1; fi; \
	done; exit $$bad

# Unit tests: no root, no network, no real components; plus the offline
# validation of the DaemonSet manifests (a module of its own).
unit: chart manifests
	$(GO) test -count=1 ./...

# Installs containerd, runc, busybox, crictl, crane, kubelet and cosign at pinned
# versions into $(E2E_CACHE) (built only when missing).
tools:
	bash e2e/tools/install.sh

# Real-node tests: a real containerd (2.x and 1.6), runc, kubelet and cosign. Root required.
# Every component runs in private temp dirs on free ports, so runs do not collide.
e2e: tools build
	$(E2E_ENV) $(GO) test -tags e2e -count=1 -p 1 -timeout $(E2E_TIMEOUT) ./e2e/...

test: tools vet unit e2e

# Benchmarks against the real containerd, registry and cosign (root required).
# They report percentiles through b.ReportMetric and take a fixed number of
# interleaved samples per iteration (CRIGUARD_BENCH_ROUNDS, CRIGUARD_BENCH_POD_ROUNDS),
# hence -benchtime 1x. The load benchmarks have their own target (bench-load).
BENCH ?= ^Benchmark(Proxy|Verify|Enforce|Hostile)
bench: tools build
	$(E2E_ENV) $(GO) test -tags e2e -run '^$$' -bench '$(BENCH)' -benchtime 1x -count 1 -timeout 60m ./e2e/...

# Load benchmarks (docs/performance.md): 200 pods started in parallel, 1,000 cold
# verifications (throughput, peak RSS, verdict cache bound), and criguard's CPU
# under kubelet-like polling of 110 pods. Root required; about 10 minutes.
.PHONY: bench-load
bench-load: tools build
	$(E2E_ENV) $(GO) test -tags e2e -run '^$$' -bench '^BenchmarkLoad' -benchtime 1x -count 1 -timeout 60m ./e2e/

# A demo on this machine: containerd, a local registry with signed and unsigned
# images, criguard in front, and crictl pulls that are allowed and refused.
demo: tools build
	$(E2E_ENV) $(GO) run -tags e2e ./e2e/demo

# Every Go fuzz target, each for $(FUZZTIME).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# kind, offline (docs/kind.md; root; not part of `make test`: a cold node image
# build takes 18 min on 2 quiet cores with empty Go caches, far more under load). kind-node-image builds the node image from
# Debian packages and the Go module proxy at the versions in
# e2e/kind/nodeimage/pins.env, cached under $(KIND_CACHE) and rebuilt only when
# a pin changes. e2e-kind runs the DaemonSet round trip on a two-node cluster,
# starting (and afterwards stopping) its own dockerd when none runs.
KIND_CACHE ?= $(CURDIR)/.cache/kind
export CRIGUARD_KIND_CACHE := $(KIND_CACHE)
.PHONY: kind-node-image demo-kind bench-kind e2e-kind-kyverno
kind-node-image:
	bash e2e/kind/nodeimage/build.sh
e2e-kind: tools
	bash e2e/kind/run.sh
# The kind demo: a signed Deployment Ready, an unsigned pod refused, in kubectl's words.
demo-kind: tools
	DEMO=1 bash e2e/kind/run.sh
# The Helm chart on a two-node kind cluster: helm install, an invalid ImagePolicy
# refused, an ImagePolicy object enforced on every node, helm uninstall (root).
.PHONY: e2e-kind-helm
e2e-kind-helm: tools helm
	bash e2e/kind/helm.sh
# cosign plus a real Kyverno (built offline) side by side on the same cluster.
e2e-kind-kyverno: tools
	KYVERNO=1 bash e2e/kind/run.sh
# A 50-replica rollout with criguard and without, interleaved (docs/performance.md).
bench-kind: tools
	BENCH=1 bash e2e/kind/run.sh

clean:
	rm -rf bin
