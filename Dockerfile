# syntax=docker/dockerfile:1
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 .
# The builder runs on the build host's platform and cross-compiles static
# binaries with `make build`, the same target developers and CI use.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} make build BIN=/out

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="pvelb" \
      org.opencontainers.image.description="LoadBalancer Services for Talos clusters on Proxmox VE" \
      org.opencontainers.image.source="https://github.com/pvelb/pvelb" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/pvelb-ccm /usr/local/bin/pvelb-ccm
# The CCM needs no privilege at all.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pvelb-ccm"]
