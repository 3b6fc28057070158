#!/bin/sh
# Fetches DuckDB's official prebuilt library (npm: @duckdb/node-bindings-linux-x64) and its
# httpfs extension (PyPI: duckdb-extension-httpfs) into DIR, laid out as DuckDB's
# extension_directory expects. Every download is pinned by URL and checked by SHA-256; the
# versions are scripts/bootstrap's (change them together). CA certificates in
# /usr/local/share/k2-extra-ca (docker/k2/extra-ca/ in the build context) are trusted as
# well as Debian's: what a build behind a TLS-inspecting proxy needs.
#   fetch-duckdb.sh DIR
set -eu
out=$1
version=1.5.5
npm_url=https://registry.npmjs.org/@duckdb/node-bindings-linux-x64/-/node-bindings-linux-x64-1.5.5-r.5.tgz
npm_sha256=86d2bda909785550e8a14a57a8a4584827aff0e268d8f1a58c3fd48559f7020e
httpfs_url=https://files.pythonhosted.org/packages/02/14/921faf933bb5cae7fb477c69f684fbea26bb4d76ff937d19d486af3a54cb/duckdb_extension_httpfs-1.5.5-py3-none-manylinux2014_x86_64.whl
httpfs_sha256=84913dbe172ccb54368de2c4a020c38ca8b0e76f99df548f7fac37934cc7826f

ca=/etc/ssl/certs/ca-certificates.crt
extra=$(find /usr/local/share/k2-extra-ca -type f \( -name '*.crt' -o -name '*.pem' \) 2>/dev/null || true)
if [ -n "$extra" ]; then
  # shellcheck disable=SC2086 # one path per word: the names are the context's own files
  cat "$ca" $extra >/tmp/k2-ca.pem
  ca=/tmp/k2-ca.pem
fi
work=$(mktemp -d)
fetch() { # URL SHA256 FILE
  curl -fsSL --retry 3 --cacert "$ca" "$1" -o "$work/$3"
  echo "$2  $work/$3" | sha256sum -c --quiet -
}
fetch "$npm_url" "$npm_sha256" duckdb.tgz
fetch "$httpfs_url" "$httpfs_sha256" httpfs.whl
mkdir -p "$out/extensions/v$version/linux_amd64"
tar -xzf "$work/duckdb.tgz" -C "$work" package/libduckdb.so package/LICENSE
mv "$work/package/libduckdb.so" "$work/package/LICENSE" "$out/"
python3 -m zipfile -e "$work/httpfs.whl" "$work/whl"
find "$work/whl" -name httpfs.duckdb_extension -exec mv {} "$out/extensions/v$version/linux_amd64/" \;
test -f "$out/extensions/v$version/linux_amd64/httpfs.duckdb_extension"
rm -rf "$work" /tmp/k2-ca.pem
