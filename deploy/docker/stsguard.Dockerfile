# syntax=docker/dockerfile:1
# The stsguard admission webhook. Build from the repository root:
#   docker build -f deploy/docker/stsguard.Dockerfile -t ghcr.io/stsguard/stsguard:0.1.0 .
# The webhook's build script compiles the built-in policies (policies/*) for
# wasm32-wasip2 and embeds them, so the builder needs that target.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target dir between builds; the binary is
# copied out in the same step because the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p stsguard-webhook --bin stsguard \
 && install -D -m 0755 target/release/stsguard /out/stsguard

# glibc 2.36 and libgcc, no shell, no package manager; user nonroot = 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="stsguard" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook for StatefulSets with WebAssembly policies" \
      org.opencontainers.image.source="https://github.com/stsguard/stsguard" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/stsguard /usr/local/bin/stsguard
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/stsguard"]
CMD ["serve"]
