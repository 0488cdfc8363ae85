# syntax=docker/dockerfile:1
# Lessor in a small image: built in the Rust image, run from debian-slim as an unprivileged user.
#
#   docker build -t lessor .
#   docker run -p 8200:8200 -e LESSOR_SEAL_KEY_FILE=/run/secrets/seal.key \
#     -e LESSOR_TLS_CERT_FILE=/etc/lessor/tls/tls.crt -e LESSOR_TLS_KEY_FILE=/etc/lessor/tls/tls.key \
#     -v lessor-data:/var/lib/lessor ... lessor
#
# `lessor server` refuses to start without TLS files (LESSOR_TLS_CERT_FILE, LESSOR_TLS_KEY_FILE)
# or an explicit LESSOR_TLS_DISABLE=true (plain HTTP, e.g. behind a TLS-terminating proxy), and
# without a seal key (LESSOR_SEAL_KEY or LESSOR_SEAL_KEY_FILE). docker-compose.yml runs the same
# image as `lessor dev` instead, which needs neither.

# The builder's Debian release must match the runtime's: the binary links against its glibc.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds; the binary is
# copied out because the target directory is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lessor \
    && install -m 0755 target/release/lessor /usr/local/bin/lessor

FROM debian:bookworm-slim
# ca-certificates: TLS to target databases and JWKS endpoints; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so volumes and Kubernetes' runAsNonRoot can name it; it owns only its data dir.
RUN groupadd --system --gid 10001 lessor \
    && useradd --system --uid 10001 --gid lessor --home-dir /var/lib/lessor --shell /usr/sbin/nologin lessor \
    && install -d -o lessor -g lessor -m 0700 /var/lib/lessor
COPY --from=builder /usr/local/bin/lessor /usr/local/bin/lessor

# Defaults a container needs (every one is a variable config.rs reads; the others are left to
# the operator): listen on all interfaces, keep the store in the volume.
ENV LESSOR_LISTEN=0.0.0.0:8200 \
    LESSOR_STORE_URL=/var/lib/lessor/lessor.db
VOLUME ["/var/lib/lessor"]
WORKDIR /var/lib/lessor
USER 10001:10001
EXPOSE 8200

# sys/health is public and unaudited. Plain HTTP first, then HTTPS; -k because the check calls
# 127.0.0.1, which the server's certificate need not name, and it sends no token.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8200/v1/sys/health \
     || curl -fsSk -o /dev/null https://127.0.0.1:8200/v1/sys/health \
     || exit 1

ENTRYPOINT ["/usr/local/bin/lessor"]
CMD ["server"]
