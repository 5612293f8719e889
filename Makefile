# pvelb build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
COMMANDS := pvelb-ccm pvelb-announcer pvelb-bgp-speaker pvelbctl
# What `<command> --version` prints (package buildinfo) and the image's
# version/revision labels. A release tag builds with VERSION=<the tag>.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Every timestamp in the image: the commit's time, so the same commit builds
# the same image digests.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Expanded once here, not once per use (the shell calls above).
VERSION := $(VERSION)
COMMIT := $(COMMIT)
SOURCE_DATE_EPOCH := $(SOURCE_DATE_EPOCH)
LDFLAGS := -s -w -X github.com/pvelb/pvelb/cmd/internal/buildinfo.Version=$(VERSION) -X github.com/pvelb/pvelb/cmd/internal/buildinfo.Commit=$(COMMIT)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ACTIONLINT := github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
TEST_TIMEOUT ?= 30m

.PHONY: all build image push kube-bins kubectl peers bench-peers bench-peers-run demo demo-deps test test-unit lint bench soak generate clean

all: build

# Static binaries: the Dockerfile copies exactly these from $(BIN).
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))

# The container image, without a container engine or a base image to pull:
# `make build` cross-compiles COMMANDS for each platform into
# $(IMAGE_DIR)/<os>_<arch>/, and hack/image (go-containerregistry) assembles
# them with Debian's CA bundle from this host, passwd/group for the nonroot
# user 65532 and the Dockerfile's labels into an OCI image layout
# ($(IMAGE_LAYOUT)) and an OCI archive ($(IMAGE_ARCHIVE)). Every timestamp is
# SOURCE_DATE_EPOCH, so a commit builds the same digests. test/build keeps it
# equivalent to the Dockerfile; hack/image's tests run what it ships.
# Cold, the arm64 compile dominates (about 6.5 CPU minutes); warm, 10-40 s.
IMAGE_DIR := $(BIN)/image
IMAGE_LAYOUT := $(IMAGE_DIR)/oci
IMAGE_ARCHIVE := $(IMAGE_DIR)/pvelb-oci.tar
IMAGE_PLATFORMS := linux/amd64 linux/arm64
IMAGE_TOOL := $(BIN)/pvelb-image
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
comma := ,
empty :=
space := $(empty) $(empty)
image:
	@[ -f $(CA_BUNDLE) ] || { echo "make image: $(CA_BUNDLE) is missing: apt-get install ca-certificates (or set CA_BUNDLE)"; exit 1; }
	@for p in $(IMAGE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		GOOS=$$os GOARCH=$$arch $(MAKE) --no-print-directory build BIN=$(IMAGE_DIR)/$${os}_$$arch VERSION=$(VERSION) COMMIT=$(COMMIT) || exit 1; \
	done
	cd hack/image && $(GO) build -o $(IMAGE_TOOL) .
	$(IMAGE_TOOL) build --bin-dir $(IMAGE_DIR) --platforms $(subst $(space),$(comma),$(IMAGE_PLATFORMS)) \
		--commands $(subst $(space),$(comma),$(COMMANDS)) --version $(VERSION) --revision $(COMMIT) \
		--created $(SOURCE_DATE_EPOCH) --ca-file $(CA_BUNDLE) --out $(IMAGE_LAYOUT) --archive $(IMAGE_ARCHIVE)

# Push the image `make image` built: make push IMAGE=registry.example.com/pvelb/pvelb:v0.1.0
# Credentials come from the Docker config (~/.docker/config.json or
# $DOCKER_CONFIG, as `docker login` or `crane auth login` write it).
# INSECURE=1 allows a plain-HTTP registry (already the case for localhost,
# loopback and RFC 1918 addresses). docs/install.md: private registries and
# Talos registry mirrors.
IMAGE ?=
INSECURE ?=
push:
	@[ -n "$(IMAGE)" ] || { echo "make push: set IMAGE=registry/name:tag (make image builds what is pushed)"; exit 1; }
	cd hack/image && $(GO) build -o $(IMAGE_TOOL) .
	$(IMAGE_TOOL) push $(if $(INSECURE),--insecure) $(IMAGE_LAYOUT) $(IMAGE)

# The real kube-apiserver and etcd the tests run against, and the real
# kube-proxy and kube-controller-manager of the data-path labs, from the tools
# module. Cold: about 9 minutes on 2 cores for the first two; the other two
# reuse most of their packages and add about 2 minutes (alone from an empty
# cache they take about 12). Warm: seconds from the Go build cache.
kube-bins:
	@mkdir -p $(BIN)
	@echo "building kube-apiserver, etcd, kube-proxy and kube-controller-manager (test/tools; minutes on a cold build cache)"
	cd test/tools && $(GO) build -o $(BIN)/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
	cd test/tools && $(GO) build -o $(BIN)/etcd go.etcd.io/etcd/server/v3
	cd test/tools && $(GO) build -o $(BIN)/kube-proxy k8s.io/kubernetes/cmd/kube-proxy
	cd test/tools && $(GO) build -o $(BIN)/kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager

# kubectl for exploring the lab, from the same Kubernetes sources as the
# apiserver (Debian 12 does not package it).
kubectl:
	@mkdir -p $(BIN)
	cd test/tools && $(GO) build -o $(BIN)/kubectl k8s.io/kubernetes/cmd/kubectl

# MetalLB (controller, speaker), kube-vip and kube-vip-cloud-provider, built
# from their released sources as pinned by the tools modules under test/peers
# (one module each: their Kubernetes libraries differ), for bench-peers.
# Cold: about 5 minutes on 2 cores; warm: seconds. GONOSUMDB: the kube-vip
# modules are not in the checksum database; their go.sum files are committed.
PEERS_BIN := $(BIN)/peers
peers:
	@mkdir -p $(PEERS_BIN)
	cd test/peers/metallb && CGO_ENABLED=0 $(GO) build -trimpath -o $(PEERS_BIN)/ go.universe.tf/metallb/controller go.universe.tf/metallb/speaker
	cd test/peers/kube-vip && GONOSUMDB=github.com/kube-vip CGO_ENABLED=0 $(GO) build -trimpath -o $(PEERS_BIN)/ github.com/kube-vip/kube-vip
	cd test/peers/kube-vip-cloud-provider && GONOSUMDB=github.com/kube-vip CGO_ENABLED=0 $(GO) build -trimpath -o $(PEERS_BIN)/ github.com/kube-vip/kube-vip-cloud-provider

# pvelb, MetalLB and kube-vip side by side in the same lab (BenchmarkPeers in
# test/e2e), writing the table docs/comparison.md quotes to
# docs/benchmarks-peers.md. Needs root; installs what the lab needs (as make
# demo, plus bird2). Not part of `make test`: about 85 minutes on 2 cores with
# the default 10 runs per timed row (PEERS_RUNS); PEERS_ONLY=pvelb,metallb
# runs some implementations only.
PEERS_RUNS ?= 10
PEERS_ONLY ?=
bench-peers:
	@$(MAKE) --no-print-directory demo-deps DEPS_FOR="make bench-peers" DEMO_TOOLS="$(DEMO_TOOLS) birdc:bird2"
	@$(MAKE) --no-print-directory bench-peers-run

bench-peers-run: kube-bins build peers
	PVELB_KUBE_BIN_DIR=$(BIN) PVELB_BIN_DIR=$(BIN) PVELB_PEERS_BIN_DIR=$(PEERS_BIN) \
		PVELB_PEERS_RUNS=$(PEERS_RUNS) PVELB_PEERS_ONLY=$(PEERS_ONLY) PVELB_PEERS_RESULTS=$(CURDIR)/docs/benchmarks-peers.md \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkPeers$$' -benchtime=1x -v -timeout 3h ./test/e2e/

# The lab on one machine: real apiserver, etcd and kube-controller-manager,
# the Proxmox simulator with its firewall emulated on the lab bridge,
# pvelb-ccm and three nodes running pvelb-announcer and kube-proxy (iptables
# mode) in network namespaces, two pods behind a Service with a VIP, its
# Proxmox IPSet entries, curl through the VIP, the drops while a VIP's entry
# is missing and a failover measured by HTTP; then it waits for kubectl until
# Ctrl-C. Needs root (namespaces; apt-get on Debian for the tools) and Go;
# pass flags with DEMO_FLAGS="--nodes 4 --no-failover".
DEMO_TOOLS := ip:iproute2 ping:iputils-ping arping:iputils-arping curl:curl sysctl:procps nft:nftables iptables:iptables ip6tables:iptables iptables-save:iptables ip6tables-save:iptables
DEMO_FLAGS ?=
DEPS_FOR ?= make demo
demo: demo-deps
	@echo "==> building kube-apiserver, etcd, kube-proxy, kube-controller-manager and pvelb's commands"
	@echo "    the first build compiles Kubernetes: about 10 minutes on 2 cores (later runs: seconds)."
	@echo "    progress: a line per 100 compiled packages"
	@set -o pipefail; GOFLAGS="$(GOFLAGS) -v" $(MAKE) --no-print-directory kube-bins kubectl build 2>&1 | \
		awk '/^[A-Za-z0-9._~\/-]+$$/ { n++; if (n % 100 == 0) { printf "    ... %d packages compiled (now %s)\n", n, $$0; fflush() } next } { print; fflush() }'
	@echo "==> starting the lab (bin/pvelbctl lab $(DEMO_FLAGS))"
	$(BIN)/pvelbctl lab $(DEMO_FLAGS)

# What demo needs besides Go: root, and iproute2/iputils/curl/procps/nftables/iptables
# (nft runs the emulated Proxmox firewall on the lab bridge, kube-proxy runs iptables),
# installed with apt-get on Debian when missing. Says exactly what is missing otherwise.
demo-deps:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "$(DEPS_FOR): needs root: it creates network namespaces and installs Debian packages (iproute2 iputils-ping iputils-arping curl procps nftables iptables)."; \
		echo "           run: sudo $(DEPS_FOR)"; exit 1; fi
	@missing=""; for t in $(DEMO_TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null; then \
			echo "==> installing Debian packages:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || exit 1; \
		else echo "$(DEPS_FOR): missing packages:$$missing (no apt-get here: install them with your package manager)"; exit 1; fi; \
	fi
	@command -v $(GO) >/dev/null || { echo "$(DEPS_FOR): Go is missing: install Go 1.26 from https://go.dev/dl/ (Debian 12's golang package is too old) and put it on PATH"; exit 1; }
	@$(GO) version | awk '{ v = $$3; sub(/^go/, "", v); split(v, a, "."); if (a[1] < 1 || (a[1] == 1 && a[2] < 26)) { print "$(DEPS_FOR): " $$3 " is too old: pvelb needs Go 1.26 (https://go.dev/dl/)"; exit 1 } }'
	@[ -f ../shared/pve-api/apidata-pve9.1.3.js ] || [ -n "$$PVELB_PVE_API_DIR" ] || { echo "$(DEPS_FOR): the Proxmox API schema ../shared/pve-api/apidata-pve9.1.3.js is missing beside the checkout (or set PVELB_PVE_API_DIR)"; exit 1; }
	@echo "==> prerequisites present (root, iproute2, iputils, curl, procps, nftables, Go, Proxmox API schema)."
	@echo "    kubectl: Debian 12 does not package it; the demo builds bin/kubectl from the same Kubernetes sources."

# Every test: unit, simulator, real-apiserver integration. Tests that need root
# or network namespaces fail (never skip) when PVELB_REQUIRE_PRIVILEGED=1, as in CI.
test: kube-bins build image
	PVELB_KUBE_BIN_DIR=$(BIN) PVELB_BIN_DIR=$(BIN) PVELB_IMAGE_LAYOUT=$(IMAGE_LAYOUT) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd hack/controller-gen && $(GO) test -count=1 ./crdcheck/
	@# The image as a user gets it: platforms, configs, its binaries run, make push.
	cd hack/image && PVELB_IMAGE_LAYOUT=$(IMAGE_LAYOUT) $(GO) test -count=1 -timeout 10m ./...
	@# The Helm chart and the Talos patches are tested in their own modules (Helm and
	@# Talos machinery bring dependencies the product does not need). -mod=mod lets
	@# their go.sum follow the main module's go.mod when that changes.
	cd test/charts && PVELB_KUBE_BIN_DIR=$(BIN) $(GO) test -mod=mod -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd test/talos && $(GO) test -mod=mod -count=1 ./...

test-unit:
	$(GO) test -short -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@# The tools modules (not in ./... of the main module) are vetted too.
	cd hack/image && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	@# The release workflow (.github/workflows), which only runs on a pushed tag.
	$(GO) run $(ACTIONLINT) -no-color

# Go benchmarks and scenario runs; figures go to docs/benchmarks.md.
bench: kube-bins build
	PVELB_KUBE_BIN_DIR=$(BIN) PVELB_BIN_DIR=$(BIN) $(GO) test -count=1 -run '^$$' -bench . -benchmem -timeout 60m ./...

# The churn suite's long run (TestChurn in test/e2e; `make test` runs its short
# seeded run): random Service, IPPool, replica, apiserver and Proxmox operations
# with the address and IPSet invariants checked all along. A violation prints
# the seed (replay it with SOAK_SEED=...) and the timeline of the Services
# involved. About 0.2 s per operation on 2 cores; SOAK_DURATION bounds the run;
# SOAK_V=3 logs the replicas' restore and conflict decisions too; SOAK_PACE is
# the pause between operations (120ms when empty; 0s fires them back to back).
SOAK_OPS ?= 20000
SOAK_DURATION ?= 3h
SOAK_SEED ?=
SOAK_V ?= 2
SOAK_PACE ?=
SOAK_TIMEOUT ?= 4h
soak: kube-bins build
	PVELB_SOAK_OPS=$(SOAK_OPS) PVELB_SOAK_DURATION=$(SOAK_DURATION) PVELB_SOAK_SEED=$(SOAK_SEED) PVELB_SOAK_V=$(SOAK_V) PVELB_SOAK_PACE=$(SOAK_PACE) \
		PVELB_KUBE_BIN_DIR=$(BIN) PVELB_BIN_DIR=$(BIN) $(GO) test -count=1 -v -run '^TestChurn$$' -timeout $(SOAK_TIMEOUT) ./test/e2e/

clean:
	rm -rf $(BIN)
