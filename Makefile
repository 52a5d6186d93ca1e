# WorkerPool operator: build, test and benchmark entry points.
# `make help` lists every target. CI runs `make test` (see .ci/run).

# Go toolchain used for everything below; override with `make GO=go1.26.8 ...`.
GO ?= go
# gofmt from the same toolchain as $(GO), so formatting never depends on $PATH order.
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt
# Build tools (benchstat; later controller-gen, helm) are pinned in their own
# module so their dependencies stay out of the product's go.mod.
# Use as `$(TOOLS) benchstat old.txt new.txt`.
TOOLS = $(GO) tool -modfile=$(CURDIR)/hack/tools/go.mod
# Where `make build` puts binaries.
BIN ?= $(CURDIR)/bin
# Version stamped into tasker-worker and libtaskerworker.so.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS = -X github.com/seed-a17b38e7/workerpool-operator/pkg/taskerworker.Version=$(VERSION)

# Go files to format: tracked ones plus new files not yet added (ignored files
# excluded); $(wildcard) below drops tracked files deleted from the work tree.
GO_FILES = $(shell git ls-files --cached --others --exclude-standard -- '*.go' 2>/dev/null || \
	find . -name '*.go' -not -path './.git/*')

# Recipes run in bash, stop at the first failing command and fail pipelines.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec
.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: fmt
fmt: ## Format Go files in place with gofmt
	$(GOFMT) -w $(wildcard $(GO_FILES))

.PHONY: fmt-check
fmt-check: ## Fail, listing them, if any Go files are not gofmt-formatted
	@files="$$($(GOFMT) -l $(wildcard $(GO_FILES)))"; \
	if [ -n "$$files" ]; then \
		echo "These files are not gofmt-formatted (run 'make fmt'):"; \
		echo "$$files"; \
		exit 1; \
	fi

.PHONY: vet
vet: ## Run go vet on every package (test/monitoring, a module of its own, too)
	$(GO) vet ./...
	cd test/monitoring && $(GO) vet ./...

##@ Generate

.PHONY: manifests
manifests: ## Generate the WorkerPool CRD (config/crd/bases) and the operator's ClusterRole (config/rbac/role.yaml) with controller-gen
	$(TOOLS) controller-gen crd:generateEmbeddedObjectMeta=true rbac:roleName=manager-role paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	$(GO) run ./hack/crdtrim config/crd/bases/workers.tasker.dev_workerpools.yaml spec.template

.PHONY: generate
generate: ## Generate deepcopy code for api/ with controller-gen
	$(TOOLS) controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: verify-generated
verify-generated: manifests generate ## Fail if the committed CRD or deepcopy code differs from what controller-gen generates
	@git diff --exit-code -- config/crd config/rbac/role.yaml api || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }

# The Helm chart: its CRD template and its copies of config/rbac's roles and
# config/prometheus's alert rules are generated from config/ (never by hand).
CHART = charts/workerpool-operator
CHART_GENERATED = $(CHART)/templates/crd-*.yaml $(CHART)/files/config

.PHONY: chart-generate
chart-generate: ## Generate the chart's CRD template (config/crd/bases, keep policy) and its copies of config/rbac and config/prometheus rules
	bash hack/chart-generate.sh

.PHONY: verify-chart
verify-chart: manifests chart-generate ## Fail if the chart's generated files differ from what chart-generate writes; helm lint --strict the chart
	@git diff --exit-code -- $(CHART_GENERATED) && \
	untracked="$$(git ls-files --others --exclude-standard -- $(CHART_GENERATED))" && [ -z "$$untracked" ] || \
		{ echo "the chart's generated files are stale or not committed: run 'make chart-generate' and commit"; echo "$$untracked"; exit 1; }
	$(TOOLS) helm lint --strict $(CHART)

.PHONY: envtest
envtest: ## Build (or reuse) kube-apiserver and etcd for envtest, cached in ~/.cache/workerpool-operator
	@bash hack/build-envtest.sh >/dev/null

.PHONY: prometheus
prometheus: ## Build (or reuse) promtool and the prometheus server at the release hack/tools/go.mod pins, cached in ~/.cache/workerpool-operator/prometheus
	@GO=$(GO) bash hack/build-prometheus.sh >/dev/null

##@ Build

.PHONY: build
build: lib ## Build tasker-worker, libtaskerworker.so and the operator (manager) into BIN (default bin/)
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/tasker-worker ./cmd/tasker-worker
	$(GO) build -o $(BIN)/manager ./cmd/manager

# Where `make packages` puts the Python wheel and the Ruby gem.
PACKAGES_DIR ?= $(BIN)/packages

.PHONY: packages
packages: ## Build the Python wheel and the Ruby gem, each with libtaskerworker.so inside, into BIN/packages (versioned from VERSION)
	VERSION=$(VERSION) OUT=$(PACKAGES_DIR) GO=$(GO) bash hack/packages/build.sh

.PHONY: lib
lib: ## Build the C ABI for foreign handlers: BIN/libtaskerworker.so and its header BIN/taskerworker.h
	@mkdir -p $(BIN)
	$(GO) build -buildmode=c-shared -ldflags "$(LDFLAGS)" -o $(BIN)/libtaskerworker.so ./cmd/libtaskerworker
	cp cmd/libtaskerworker/taskerworker.h $(BIN)/taskerworker.h

##@ Run

.PHONY: run-worker
run-worker: test-deps build ## Run a worker end to end: local PostgreSQL, a stream of steps, live queue stats, SIGTERM drain
	BIN=$(BIN) bash hack/run-worker.sh

# Flags for `make run`, e.g. `make run ARGS="--watch-namespaces=shop --status-interval=5s"`.
ARGS ?=

.PHONY: run
run: manifests generate ## Run the operator on this machine against the current kubeconfig (installs the CRD first)
	kubectl apply --server-side --force-conflicts -f config/crd/bases
	$(GO) run ./cmd/manager --metrics-secure=false --metrics-bind-address=127.0.0.1:8080 --health-probe-bind-address=127.0.0.1:8081 $(ARGS)

##@ Test

.PHONY: test-deps
test-deps: ## Install what the tests need from Debian (PostgreSQL 15, C toolchain) if missing
	@bash hack/install-test-deps.sh

# Tests that exercise the real worker binary and the C ABI library find them
# through these; the Python and Ruby binding suites (bindings/) run from the
# wheel and the gem, installed.
test: export TASKER_WORKER_BIN := $(BIN)/tasker-worker
test: export TASKERWORKER_LIB := $(BIN)/libtaskerworker.so
test: export TASKERWORKER_PACKAGES := $(PACKAGES_DIR)

.PHONY: test
test: test-deps verify-generated verify-chart build packages envtest ## Run the whole test suite with -race (test/monitoring's promtool alert tests too), then fuzz the config parser and the FFI result decoders briefly
	KUBEBUILDER_ASSETS="$$(bash hack/build-envtest.sh)" $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory test-monitoring
	$(GO) test -race -count=1 -tags ffibench ./cmd/libtaskerworker/ # the benchmarks' DB-free event source
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=10s ./internal/config/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeResult -fuzztime=10s ./internal/ffi/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeFastMatchesStd -fuzztime=10s ./internal/ffi/

# test/monitoring is a module of its own (its go.mod says why), so `go test
# ./...` above does not reach it. promtool is built first, so that a first
# build (minutes) does not count against the tests' time limit.
.PHONY: test-monitoring
test-monitoring: ## Prove the alert rules and the dashboard with Prometheus's parser and promtool (check rules; test rules for every alert)
	@GO=$(GO) bash hack/build-prometheus.sh promtool >/dev/null
	cd test/monitoring && $(GO) test -race -count=1 -timeout 20m ./...

# The FFI round-trip benchmarks run the real library and worker binary.
bench: export TASKER_WORKER_BIN := $(BIN)/tasker-worker
bench: export TASKERWORKER_LIB := $(BIN)/libtaskerworker.so

.PHONY: bench
bench: test-deps build envtest ## Run the benchmarks behind docs/benchmarks.md (dispatch ratio, queue, FFI round trip, worker runtime)
	bash hack/bench-ratio.sh ./internal/dispatch Dispatch BarePipeline 10 300000x
	$(GO) test -run='^$$' -bench=. -benchmem ./internal/queue/
	$(GO) test -run='^$$' -bench='^BenchmarkDispatch$$' -benchtime=300000x -count=3 ./internal/dispatch/
	$(GO) test -run='^$$' -bench='DecodeResult|EncodeEvent' -benchtime=100000x -count=3 ./internal/ffi/
	$(GO) test -run='^$$' -bench=PollComplete -benchtime=100000x -count=3 ./internal/ffi/
	$(GO) test -run='^$$' -bench=RoundTrip -benchtime=100000x -count=3 ./bindings/
	@echo "Past 65536 completions (FFI settled-memory compaction, docs/benchmarks.md):"
	$(GO) test -run='^$$' -bench=PollComplete/struct -benchtime=200000x ./internal/ffi/
	$(GO) test -run='^$$' -bench='RoundTrip/c/' -benchtime=200000x ./bindings/
	@echo "Worker runtime on PostgreSQL (end-to-end steps/s vs pgbench, NOTIFY latency, RSS; docs/benchmarks.md):"
	bash hack/bench-worker.sh 200000 5000 3
	@echo "Operator: one status pass over 500 and over 5000 pods (ScrapeAll vs plain GETs, interleaved; docs/benchmarks.md):"
	$(GO) test -run='^$$' -bench='ScrapePass(500|5000)$$' -benchtime=20x -count=3 ./controllers/
	$(GO) test -run='^$$' -bench='MetricsPage10000$$' -benchtime=5x -count=3 ./controllers/
	@echo "Operator: 1000 and 10000 WorkerPools to steady state on envtest (operator binary vs the same applies made directly, RSS, restart; docs/benchmarks.md):"
	KUBEBUILDER_ASSETS="$$(bash hack/build-envtest.sh)" MANAGER_BIN=$(BIN)/manager $(GO) test -run='^$$' -bench='Reconcile(1000|10000)Pools$$' -benchtime=1x -timeout 90m ./test/envtest/

##@ Deployment

# Image of the operator (manager) that `make deploy` and `make build-installer`
# put in the manifests, e.g. `make deploy IMG=registry.example/workerpool-operator:v0.1.0`.
IMG ?= controller:latest
KUBECTL ?= kubectl
# kustomize at the version pinned in hack/tools/go.mod, built into BIN: `kustomize
# edit` must run inside the kustomization's directory, where `go tool -modfile`
# cannot find the module.
KUSTOMIZE = $(abspath $(BIN))/kustomize
# `make undeploy ignore-not-found=true` tolerates objects already gone.
ignore-not-found ?= false
# Renders config/default with IMG as the manager's image, from a temporary copy
# of config/ so the committed tree keeps controller:latest.
RENDER = tmp="$$(mktemp -d)" && trap 'rm -rf "$$tmp"' EXIT && cp -R config "$$tmp/" && \
	(cd "$$tmp/config/manager" && $(KUSTOMIZE) edit set image controller=$(IMG)) && \
	$(KUSTOMIZE) build "$$tmp/config/default"

.PHONY: kustomize
kustomize: ## Build the pinned kustomize (hack/tools/go.mod) into BIN
	@mkdir -p $(BIN)
	$(GO) build -modfile=$(CURDIR)/hack/tools/go.mod -o $(KUSTOMIZE) sigs.k8s.io/kustomize/kustomize/v5

.PHONY: build-installer
build-installer: manifests kustomize ## Write dist/install.yaml: CRD, RBAC and the operator (image IMG) in one file for kubectl apply
	@mkdir -p dist
	$(RENDER) > dist/install.yaml
	@echo "wrote dist/install.yaml (image $(IMG))"

.PHONY: install
install: manifests kustomize ## Install the WorkerPool CRD into the current kubeconfig's cluster
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side --force-conflicts -f -

.PHONY: uninstall
uninstall: kustomize ## Remove the WorkerPool CRD (and with it every WorkerPool) from the cluster
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator (image IMG) with its CRD and RBAC to the current kubeconfig's cluster
	$(RENDER) | $(KUBECTL) apply --server-side --force-conflicts -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator, its RBAC and the CRD (and with it every WorkerPool) from the cluster
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

##@ Cluster

# A real single-node Kubernetes cluster on this machine, without Docker
# (hack/cluster, docs/local-cluster.md). Needs root.
IMAGES_DIR ?= $(BIN)/images
CLUSTER_KUBECONFIG ?= $(HOME)/.cache/workerpool-operator/cluster/kubeconfig

.PHONY: images
images: packages ## Build the operator, tasker-worker, pause, tasker-python-worker and tasker-ruby-worker images without Docker into BIN/images (tagged VERSION and dev)
	VERSION=$(VERSION) IMAGES_DIR=$(IMAGES_DIR) PACKAGES_DIR=$(PACKAGES_DIR) GO=$(GO) bash hack/cluster/images.sh

.PHONY: cluster-build
cluster-build: ## Build (or reuse) the cluster's Kubernetes binaries and etcd from Go modules, cached in ~/.cache/workerpool-operator/cluster
	@GO=$(GO) bash hack/cluster/build.sh >/dev/null

.PHONY: cluster-up
cluster-up: images cluster-build ## Start (or reuse) the local single-node cluster, import BIN/images into it and print the KUBECONFIG line
	@CLUSTER_KUBECONFIG=$(CLUSTER_KUBECONFIG) GO=$(GO) bash hack/cluster/up.sh >/dev/null
	@bash hack/cluster/import.sh $(IMAGES_DIR)/*.tar
	@echo "export KUBECONFIG=$(CLUSTER_KUBECONFIG)"

.PHONY: cluster-status
cluster-status: ## Show the local cluster's daemons with their memory, and its node
	@CLUSTER_KUBECONFIG=$(CLUSTER_KUBECONFIG) bash hack/cluster/status.sh

.PHONY: cluster-smoke
cluster-smoke: ## Check the running local cluster with the project's images: a tasker-worker pod, the operator as a Deployment, its /healthz
	@CLUSTER_KUBECONFIG=$(CLUSTER_KUBECONFIG) bash hack/cluster/smoke.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and put the machine back as it was (bridges, iptables, mounts, sysctls, state)
	@CLUSTER_KUBECONFIG=$(CLUSTER_KUBECONFIG) bash hack/cluster/down.sh

##@ Demo

.PHONY: demo
demo: test-deps ## The demo: local cluster, PostgreSQL, helm install, a WorkerPool draining a stream of steps, watched live
	GO=$(GO) MAKE="$(MAKE)" bash hack/demo.sh

.PHONY: demo-down
demo-down: ## Remove the demo, its PostgreSQL and the local cluster
	GO=$(GO) bash hack/demo.sh down

##@ End to end

.PHONY: e2e
e2e: test-deps ## Run the end-to-end suite on the local cluster (brought up, and afterwards down again, if it was not running)
	GO=$(GO) MAKE="$(MAKE)" bash hack/e2e.sh

##@ Cleanup

.PHONY: clean
clean: ## Remove build output (BIN, default bin/)
	rm -rf $(BIN)
