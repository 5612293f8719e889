# syntax=docker/dockerfile:1
# One image holds every pvelb command; the manifests pick one with `command:`.
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE .
# The builder runs on the build host's platform and cross-compiles static
# binaries with `make build`, the target developers and CI use; a test
# (test/build) checks that every binary copied below is one that target builds,
# and that `make image` (which builds this image without an engine) ships the
# same binaries, user, entrypoint and labels.
#   --build-arg VERSION=v0.1.0 --build-arg REVISION=$(git rev-parse HEAD)
ARG GO_VERSION=1.26
ARG VERSION=dev
ARG REVISION=unknown

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
ARG REVISION
WORKDIR /src
# The golang image's GOPATH is /go: the module cache is /go/pkg/mod.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} make build BIN=/out VERSION=${VERSION} COMMIT=${REVISION}

# Static binaries need no libc: distroless/static has CA roots, tzdata and a
# nonroot user, and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="pvelb" \
      org.opencontainers.image.description="LoadBalancer Services and a cloud-controller-manager for Talos clusters on Proxmox VE" \
      org.opencontainers.image.source="https://github.com/pvelb/pvelb" \
      org.opencontainers.image.url="https://github.com/pvelb/pvelb" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/pvelb-ccm /usr/local/bin/pvelb-ccm
COPY --from=build /out/pvelb-announcer /usr/local/bin/pvelb-announcer
# The announcer runs its BGP speaker from beside its own executable.
COPY --from=build /out/pvelb-bgp-speaker /usr/local/bin/pvelb-bgp-speaker
# pvelbctl doctor/status run from the same image (kubectl run ... -- pvelbctl doctor).
COPY --from=build /out/pvelbctl /usr/local/bin/pvelbctl
# The CCM needs no privilege at all. The announcer's DaemonSet runs this image
# as root with only NET_RAW, which raw ARP/NDP sockets need.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pvelb-ccm"]
