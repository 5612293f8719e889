#!/usr/bin/env bash
# Regenerates the CRD manifests and DeepCopy code from loadbalancer/api.
# controller-gen is built from its own tools module (hack/controller-gen) so its
# k8s.io pins never touch the main module.
# Usage: hack/generate.sh [CRD_OUTPUT_DIR]   (default manifests/crds)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/manifests/crds}"
bin="$root/bin/controller-gen"
(cd "$root/hack/controller-gen" && go build -o "$bin" sigs.k8s.io/controller-tools/cmd/controller-gen)
cd "$root"
mkdir -p "$out"
"$bin" object:headerFile=hack/boilerplate.go.txt paths=./loadbalancer/api/...
"$bin" crd:crdVersions=v1 paths=./loadbalancer/api/... output:crd:dir="$out"
# The Helm chart ships the same CRDs; its test fails when they differ.
if [ "$out" = "$root/manifests/crds" ]; then
	cp "$out"/*.yaml "$root/manifests/charts/pvelb/crds/"
fi
