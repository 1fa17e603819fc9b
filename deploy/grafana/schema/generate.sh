#!/usr/bin/env bash
# Regenerates dashboard-13.2.3.schema.json: the JSON schema of Grafana's classic dashboard JSON (the `Dashboard`
# type of @grafana/schema, the TypeScript Grafana generates from its own CUE dashboard kind), made with
# ts-json-schema-generator. Both npm packages are pinned in package.json / package-lock.json (`npm ci`).
# Needs node (>= 20) and npm with access to registry.npmjs.org; the test suite only reads the vendored output.
#   deploy/grafana/schema/generate.sh          # rewrites the vendored schema
#   deploy/grafana/schema/generate.sh --check  # exits 1 when the vendored schema differs from a fresh build
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=13.2.3
OUT="$HERE/dashboard-$VERSION.schema.json"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

cp "$HERE/package.json" "$HERE/package-lock.json" "$TMP/"
(cd "$TMP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
test "$(node -p "require('$TMP/node_modules/@grafana/schema/package.json').version")" = "$VERSION"

# strict: no --additional-properties, so every interface without an index signature gets
# "additionalProperties": false (unknown and legacy keys fail); --no-type-check: the .d.ts is not compiled
# against its imports, only read.
(cd "$TMP" && node_modules/.bin/ts-json-schema-generator \
    --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
    --type Dashboard --no-type-check --out raw.json)

node "$HERE/postprocess.mjs" "$TMP" "$TMP/raw.json" "$TMP/schema.json"
if [ "${1:-}" = "--check" ]; then
    diff -u "$OUT" "$TMP/schema.json" && echo "$OUT is up to date"
else
    cp "$TMP/schema.json" "$OUT"
    echo "wrote $OUT"
fi
