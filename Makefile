# pvelb build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
COMMANDS := pvelb-ccm pvelb-announcer
LDFLAGS := -s -w
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 30m

.PHONY: all build kube-bins test test-unit lint bench generate clean

all: build

# Static binaries: the Dockerfile copies exactly these from $(BIN).
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))

# The real kube-apiserver and etcd the tests run against, from the tools module.
# Cold: about 9 minutes on 2 cores; warm: seconds from the Go build cache.
kube-bins:
	@mkdir -p $(BIN)
	@echo "building kube-apiserver and etcd (test/tools; minutes on a cold build cache)"
	cd test/tools && $(GO) build -o $(BIN)/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
	cd test/tools && $(GO) build -o $(BIN)/etcd go.etcd.io/etcd/server/v3

# Every test: unit, simulator, real-apiserver integration. Tests that need root
# or network namespaces fail (never skip) when PVELB_REQUIRE_PRIVILEGED=1, as in CI.
test: kube-bins build
	PVELB_KUBE_BIN_DIR=$(BIN) PVELB_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd hack/controller-gen && $(GO) test -count=1 ./crdcheck/
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

# Go benchmarks and scenario runs; figures go to docs/benchmarks.md.
bench: kube-bins build
	PVELB_KUBE_BIN_DIR=$(BIN) PVELB_BIN_DIR=$(BIN) $(GO) test -count=1 -run '^$$' -bench . -benchmem -timeout 60m ./...

clean:
	rm -rf $(BIN)
