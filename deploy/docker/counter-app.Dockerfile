# syntax=docker/dockerfile:1
# The counter app. Build from the repository root:
#   docker build -f deploy/docker/counter-app.Dockerfile -t ghcr.io/stsguard/counter-app:0.1.0 .

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p counter-app --bin counter-app \
 && install -D -m 0755 target/release/counter-app /out/counter-app \
 && install -d -m 0775 /out/data

# glibc 2.36, libgcc and tzdata, no shell; user nonroot = 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="counter-app" \
      org.opencontainers.image.description="Visit counter served from a StatefulSet, one count per pod" \
      org.opencontainers.image.source="https://github.com/stsguard/stsguard" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/counter-app /usr/local/bin/counter-app
# The default visits file is /data/visits: writable without a volume too (docker run);
# in Kubernetes the pod's claim is mounted here and fsGroup makes it writable.
COPY --from=builder --chown=65532:65532 /out/data /data
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/counter-app"]
