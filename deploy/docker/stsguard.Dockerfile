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
# The built-ins, compiled once here: a new pod copies them into its (emptyDir) cache
# at start (STSGUARD_CACHE_SEED) instead of compiling them for seconds. Portable code
# (no CPU features beyond the architecture's baseline) keeps the entries valid on
# every x86-64 (or arm64) node, not only on CPUs like the build machine's.
RUN STSGUARD_PORTABLE_CODE=true /out/stsguard compile --cache-dir /out/compiled

# glibc 2.36 and libgcc, no shell, no package manager; user nonroot = 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="stsguard" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook for StatefulSets with WebAssembly policies" \
      org.opencontainers.image.source="https://github.com/stsguard/stsguard" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/stsguard /usr/local/bin/stsguard
COPY --from=builder /out/compiled /opt/stsguard/compiled
ENV STSGUARD_CACHE_SEED=/opt/stsguard/compiled \
    STSGUARD_PORTABLE_CODE=true
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/stsguard"]
CMD ["serve"]
