# The Helm chart (charts/criguard). `chart` runs `helm lint --strict` with
# several value sets; daemonset/validate (the `manifests` target) renders it
# with `helm template` and decodes every object strictly, and checks the
# ImagePolicy CRD's schema offline. helm is built from the Go module proxy at a
# pinned version into $(E2E_CACHE)/bin. charts/validate checks the alert rules
# (Prometheus' rule parser) and the dashboard's PromQL. The top-level Makefile runs both in `unit`.
HELM_VERSION ?= v3.22.0
HELM := $(E2E_CACHE)/bin/helm
export CRIGUARD_HELM := $(HELM)

.PHONY: chart helm
helm:
	@if [ "$$(cat $(E2E_CACHE)/bin/.helm.version 2>/dev/null)" != "$(HELM_VERSION)" ] || [ ! -x $(HELM) ]; then \
	  echo "[helm] go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)"; \
	  mkdir -p $(E2E_CACHE)/bin && \
	  GOBIN=$(E2E_CACHE)/bin GOFLAGS=-buildvcs=false nice -n 10 $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) && \
	  echo $(HELM_VERSION) > $(E2E_CACHE)/bin/.helm.version; \
	fi

chart: helm
	cd charts/validate && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(HELM) lint --strict charts/criguard
	$(HELM) lint --strict charts/criguard --set policy.source=imagePolicies,policy.kyverno=true,metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true
	$(HELM) lint --strict charts/criguard --set policy.source=configMap,policy.existingConfigMap=my-policy,metrics.enabled=false
	$(HELM) lint --strict charts/criguard --set uninstall.enabled=true,uninstall.purge=true
	$(HELM) lint --strict charts/criguard --set uninstall.onHelmUninstall=false,uninstall.hookTimeoutSeconds=60
