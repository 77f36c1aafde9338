#!/usr/bin/env bash
# Build step: onnxruntime-web (pinned in web/ort/package-lock.json) -> src/kulit/web/static/ort/,
# with .br and .gz copies the server sends to browsers that accept them. No CDN at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=src/kulit/web/static/ort
FILES="ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm"
if [ -f "$OUT/ort-wasm-simd-threaded.wasm.br" ] && [ "$OUT/.stamp" -nt web/ort/package-lock.json ]; then
  exit 0
fi
(cd web/ort && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$OUT"
for f in $FILES; do cp "web/ort/node_modules/onnxruntime-web/dist/$f" "$OUT/$f"; done
cp web/ort/node_modules/onnxruntime-web/LICENSE "$OUT/LICENSE" 2>/dev/null || true
node -e '
const z = require("zlib"), fs = require("fs"), path = require("path");
for (const f of process.argv.slice(1)) {
  const b = fs.readFileSync(f);
  fs.writeFileSync(f + ".br", z.brotliCompressSync(b, {params: {
    [z.constants.BROTLI_PARAM_QUALITY]: 10, [z.constants.BROTLI_PARAM_SIZE_HINT]: b.length}}));
  fs.writeFileSync(f + ".gz", z.gzipSync(b, {level: 9}));
}' $(for f in $FILES; do echo "$OUT/$f"; done)
touch "$OUT/.stamp"
