# K2's image: k2-sink, k2-query, k2-admin and k2-feed on Debian slim, with DuckDB's official
# prebuilt library and the httpfs extension (never DuckDB compiled from source).
#
#   docker build -t k2:dev .        # compiles K2 in a Rust stage (BuildKit: cache mounts)
#   scripts/image                   # the same runtime stage, binaries built on the host
#
# Both end in `runtime-base`: the binaries are the only difference (ADR-26). Written for
# the Dockerfile syntax Docker 20.10's builders know without fetching a frontend (no
# `# syntax=` line, no heredocs), so it builds where no image registry is reachable.
ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# DuckDB 1.5.5 (pinned by URL and SHA-256 in docker/k2/fetch-duckdb.sh).
FROM debian:${DEBIAN}-slim AS duckdb
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl python3 \
    && rm -rf /var/lib/apt/lists/*
COPY docker/k2/extra-ca/ /usr/local/share/k2-extra-ca/
COPY docker/k2/fetch-duckdb.sh /usr/local/bin/
RUN fetch-duckdb.sh /opt/duckdb

FROM debian:${DEBIAN}-slim AS runtime-base
# libssl3: librdkafka's TLS and SASL/SCRAM (the build stage's image has libssl-dev).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/k2 --create-home k2
COPY --from=duckdb /opt/duckdb /opt/duckdb
# On the loader's path, so binaries find it whatever rpath they were linked with (the
# build stage links against /opt/duckdb, a host build against the host's copy).
RUN echo /opt/duckdb >/etc/ld.so.conf.d/k2-duckdb.conf && ldconfig
# The shipped configuration and schemas keep the repository's layout, so the relative paths
# in k2.toml hold; deployments override keys with K2_SECTION__KEY variables.
COPY config/ /opt/k2/config/
COPY schemas/ /opt/k2/schemas/
ENV K2_CONFIG=/opt/k2/config/k2.toml \
    K2_STATE_DIR=/var/lib/k2 \
    K2_QUERY__DUCKDB_EXTENSION_DIR=/opt/duckdb/extensions \
    K2_METRICS__ADDRESS=0.0.0.0:9464 \
    K2_LOG__FORMAT=json
LABEL org.k2.image=k2
USER k2
WORKDIR /var/lib/k2
VOLUME /var/lib/k2
EXPOSE 9464
# Asks the port K2_METRICS__ADDRESS names, so a container that moves it stays checked.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${K2_METRICS__ADDRESS##*:}/healthz" || exit 1
ENTRYPOINT []
CMD ["k2-sink"]

# Binaries built on the host (same Debian release), put in docker/k2/prebuilt/ of the build
# context by scripts/image: where no Rust image can be pulled, and to reuse the host's build.
FROM runtime-base AS runtime-prebuilt
COPY docker/k2/prebuilt/ /usr/local/bin/

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
# The library the binaries link against; at run time the loader finds runtime-base's copy.
COPY --from=duckdb /opt/duckdb /opt/duckdb
# Overrides .cargo/config.toml's .k2/duckdb (cargo's [env] never replaces a set variable).
ENV DUCKDB_LIB_DIR=/opt/duckdb
WORKDIR /src
COPY . .
# K2_GIT_COMMIT: the build's commit for k2_build_info (.git is not in the context).
ARG K2_GIT_COMMIT=unknown
ENV K2_GIT_COMMIT=${K2_GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p k2-sink -p k2-query -p k2-admin -p k2-feed --bins \
    && mkdir -p /out \
    && cd target/release && strip -o /out/k2-sink k2-sink && strip -o /out/k2-query k2-query \
    && strip -o /out/k2-admin k2-admin && strip -o /out/k2-feed k2-feed

# The image users get from `docker build .` and `docker compose build`.
FROM runtime-base AS runtime
COPY --from=build /out/ /usr/local/bin/
