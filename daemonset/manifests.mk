# Offline validation of the manifests in daemonset/ (kustomize build + strict
# client-go decoding). daemonset/validate is a module of its own, so the main
# module's `go test ./...` does not reach it. The top-level Makefile includes
# this file and runs `manifests` as part of `unit`. It also renders the Helm
# chart (charts/criguard) with the pinned helm (CRIGUARD_HELM, charts/chart.mk)
# and checks the ImagePolicy CRD's schema.
.PHONY: manifests
manifests: helm
	cd daemonset/validate && $(GO) vet ./... && $(GO) test -count=1 ./...
