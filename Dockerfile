# syntax=docker/dockerfile:1.7
# K2's image: k2-sink, k2-query, k2-admin and k2-feed on Debian slim, with DuckDB's official
# prebuilt library and the httpfs extension (never DuckDB compiled from source). The pins
# are scripts/bootstrap's; change them together.
#   docker build -t k2:dev .
ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# DuckDB 1.5.5: libduckdb.so from npm (@duckdb/node-bindings-linux-x64) and the httpfs
# extension from its PyPI wheel, laid out as DuckDB's extension_directory expects.
FROM debian:${DEBIAN}-slim AS duckdb
ARG DUCKDB_VERSION=1.5.5
ARG DUCKDB_NPM_VERSION=1.5.5-r.5
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl python3 \
    && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/duckdb/extensions/v${DUCKDB_VERSION}/linux_amd64 \
    && curl -fsSL "https://registry.npmjs.org/@duckdb/node-bindings-linux-x64/-/node-bindings-linux-x64-${DUCKDB_NPM_VERSION}.tgz" \
       | tar -xz -C /tmp package/libduckdb.so package/LICENSE \
    && mv /tmp/package/libduckdb.so /tmp/package/LICENSE /opt/duckdb/ \
    && python3 - "${DUCKDB_VERSION}" <<'PY'
import io, json, sys, urllib.request, zipfile
version = sys.argv[1]
meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/duckdb-extension-httpfs/{version}/json"))
url = next(u["url"] for u in meta["urls"] if "x86_64" in u["filename"] and "manylinux" in u["filename"])
wheel = zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(url).read()))
name = next(n for n in wheel.namelist() if n.endswith("/httpfs.duckdb_extension"))
out = f"/opt/duckdb/extensions/v{version}/linux_amd64/httpfs.duckdb_extension"
open(out, "wb").write(wheel.read(name))
PY

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
COPY --from=duckdb /opt/duckdb /opt/duckdb
# Overrides .cargo/config.toml's .k2/duckdb (cargo's [env] never replaces a set variable):
# the binaries carry an rpath to /opt/duckdb, where the runtime stage puts the library.
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
    && cp target/release/k2-sink target/release/k2-query target/release/k2-admin target/release/k2-feed /out/

FROM debian:${DEBIAN}-slim
# libssl3: librdkafka's TLS and SASL/SCRAM (the build stage's image has libssl-dev).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/k2 --create-home k2
COPY --from=duckdb /opt/duckdb /opt/duckdb
COPY --from=build /out/ /usr/local/bin/
# The shipped configuration and schemas keep the repository's layout, so the relative paths
# in k2.toml hold; deployments override keys with K2_SECTION__KEY variables.
COPY config/ /opt/k2/config/
COPY schemas/ /opt/k2/schemas/
ENV K2_CONFIG=/opt/k2/config/k2.toml \
    K2_STATE_DIR=/var/lib/k2 \
    K2_METRICS__ADDRESS=0.0.0.0:9464 \
    K2_LOG__FORMAT=json
USER k2
WORKDIR /var/lib/k2
VOLUME /var/lib/k2
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT []
CMD ["k2-sink"]
