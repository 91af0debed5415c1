# syntax=docker/dockerfile:1
# certgate container image for builders with a registry: a multi-stage build — the Rust
# toolchain compiles a release binary, which is copied alone onto distroless/cc (glibc +
# libgcc + CA certificates, no shell, no package manager) and runs as the non-root user
# nonroot (65532). TLS is rustls and SQLite is compiled in (rusqlite "bundled"), so nothing
# else is needed at run time.
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t certgate:0.1.0 .
#   docker run --rm -v "$PWD/pki:/etc/certgate" certgate:0.1.0 serve --config /etc/certgate/certgate.yaml
#
# scripts/build-image.sh builds the same image without a registry or a daemon (buildah, FROM
# scratch) and is what the test suite builds and runs (scripts/check-image.sh); both have the
# same layout: /usr/local/bin/certgate (debug info stripped), user 65532:65532, writable
# /var/lib/certgate, /var/cache/certgate and /run/certgate owned by it, the same entrypoint,
# command, ports and OCI labels. This Dockerfile itself is not built in certgate's CI (its base
# images come from registries the CI machine cannot reach).

ARG RUST_VERSION=1.88
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# The commit `certgate --version` reports (build.rs; there is no .git in the build context).
ARG REVISION=unknown
ENV CERTGATE_GIT_COMMIT=${REVISION}
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src benches examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in decision crl; do echo 'fn main() {}' > benches/$b.rs; done \
 && echo 'fn main() {}' > examples/loadgen.rs \
 && cargo build --release --locked --bin certgate 2>/dev/null || true
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin certgate \
 && strip --strip-debug target/release/certgate \
 && install -d -o 65532 -g 65532 /out/var/lib/certgate /out/var/cache/certgate /out/run/certgate

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="certgate" \
      org.opencontainers.image.description="External authorization for mutual-TLS identities (Envoy ext_authz, forward-auth)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/certgate/certgate" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/certgate /usr/local/bin/certgate
# Writable places for the embedded store, the CRL cache and the sidecar socket (the chart
# mounts volumes there; a plain `docker run` works too).
COPY --from=build --chown=65532:65532 /out/ /
USER 65532:65532
EXPOSE 9001 9002 9901
ENV CERTGATE_CONFIG=/etc/certgate/certgate.yaml
ENTRYPOINT ["/usr/local/bin/certgate"]
CMD ["serve", "--config", "/etc/certgate/certgate.yaml"]
