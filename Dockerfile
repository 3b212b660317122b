# syntax=docker/dockerfile:1
#
# recsys: one binary that hosts users, products, recommendations and analytics.
#
#   docker build -t recsys:latest .
#   docker run --rm recsys:latest serve --help        # every setting and its env var
#
# The image's default command is `serve` (all four services; pick a subset with
# `serve --services users,products`). `migrate` applies the migrations and exits; the
# migrations are embedded in the binary (diesel `embed_migrations!`), so the image needs no
# migrations/ directory. Needs BuildKit (the default builder of current Docker) for the
# cache mounts.

# ---------------------------------------------------------------------------- builder
FROM rust:1.95-bookworm AS builder

# rdkafka builds its bundled librdkafka from source (configure + make, C compiler), links
# zlib through libz-sys (pkg-config) and OpenSSL (TLS and SASL to Kafka; native-tls for
# Postgres and Redis), and ring/zstd-sys compile C with cc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential \
        cmake \
        libssl-dev \
        pkg-config \
        zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry, git checkouts and target dir live in cache mounts, so a rebuild after a
# source change recompiles only the workspace crates. The target dir is a cache mount and
# is not part of the layer: the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin recsys \
    && install -D -m 0755 target/release/recsys /out/recsys

# ---------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim AS runtime

# ca-certificates and OpenSSL's library for TLS endpoints. No HTTP client: the compose health
# check is `recsys healthcheck`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 recsys \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin recsys

COPY --from=builder /out/recsys /usr/local/bin/recsys

ENV LOG_FORMAT=json

# A numeric user, so that a runtime can tell it is not root without reading /etc/passwd.
USER 10001:10001

# users, products, recommendations, analytics
EXPOSE 8080 8081 8082 8083

ENTRYPOINT ["recsys"]
CMD ["serve"]
