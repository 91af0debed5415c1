# syntax=docker/dockerfile:1
# certgate container image: a multi-stage build — the Rust toolchain compiles a release
# binary, which is copied alone onto distroless/cc (glibc + libgcc, no shell, no package
# manager) and runs as the non-root user 65532. TLS is rustls and SQLite is compiled in
# (rusqlite "bundled"), so nothing else is needed at run time.
#
#   docker build -t certgate:0.1.0 .
#   docker run --rm -v "$PWD/pki:/etc/certgate" certgate:0.1.0 serve --config /etc/certgate/certgate.yaml
#
# NOTE: this Dockerfile has not been built in certgate's CI — the CI machine has no container
# engine. The chart that runs this image (helm/certgate) is checked offline by
# scripts/check-helm.sh.

ARG RUST_VERSION=1.88
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in decision crl; do echo 'fn main() {}' > benches/$b.rs; done \
 && echo 'fn main() {}' > examples/loadgen.rs \
 && cargo build --release --locked --bin certgate 2>/dev/null || true
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin certgate \
 && strip target/release/certgate \
 && install -d -o 65532 -g 65532 /out/var/lib/certgate /out/var/cache/certgate /out/run/certgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/certgate /usr/local/bin/certgate
# Writable places for the embedded store, the CRL cache and the sidecar socket (the chart
# mounts volumes there; a plain `docker run` works too).
COPY --from=build --chown=65532:65532 /out/ /
USER 65532:65532
EXPOSE 9001 9002 9901
ENV CERTGATE_CONFIG=/etc/certgate/certgate.yaml
ENTRYPOINT ["/usr/local/bin/certgate"]
CMD ["serve", "--config", "/etc/certgate/certgate.yaml"]
