#!/usr/bin/env bash
# Regenerates the vendored JSON schemas, made with ts-json-schema-generator from @grafana/schema (the TypeScript
# Grafana generates from its own CUE kinds):
#   dashboard-13.2.3.schema.json  the classic dashboard JSON (type `Dashboard` of raw/dashboard/x/types.gen.d.ts)
#   panels-13.2.3.schema.json     `Options` and `FieldConfig` (fieldConfig.defaults.custom) of the panel plugins
#                                 npsflow uses (raw/composable/<panel>/panelcfg/x/types.gen.d.ts), as
#                                 definitions "<panel>.Options" and "<panel>.FieldConfig".
# Both npm packages are pinned in package.json / package-lock.json (`npm ci`).
# Needs node (>= 20) and npm with access to registry.npmjs.org; the test suite only reads the vendored output.
#   deploy/grafana/schema/generate.sh          # rewrites the vendored schemas
#   deploy/grafana/schema/generate.sh --check  # exits 1 when a vendored schema differs from a fresh build
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=13.2.3
PANELS="timeseries table barchart"  # the panel types npsflow/grafana.py builds
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
for panel in $PANELS; do
    for type in Options FieldConfig; do
        (cd "$TMP" && node_modules/.bin/ts-json-schema-generator \
            --path "node_modules/@grafana/schema/dist/types/raw/composable/$panel/panelcfg/x/types.gen.d.ts" \
            --type "$type" --no-type-check --out "panel-$panel-$type.json")
    done
done

mkdir "$TMP/out"
node "$HERE/postprocess.mjs" "$TMP" "$TMP/out" $PANELS
for name in dashboard panels; do
    file="$name-$VERSION.schema.json"
    if [ "${1:-}" = "--check" ]; then
        diff -u "$HERE/$file" "$TMP/out/$file" && echo "$file is up to date"
    else
        cp "$TMP/out/$file" "$HERE/$file"
        echo "wrote $HERE/$file"
    fi
done
