#!/usr/bin/env bash
# Build step: Swagger UI (pinned in web/ui/package-lock.json) -> src/kulit/web/static/vendor/,
# so /docs works offline (no CDN at run time); axe-core stays in web/ui/node_modules for the
# browser test (tests/test_web_phone.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=src/kulit/web/static/vendor/swagger-ui
if [ -f "$OUT/swagger-ui-bundle.js" ] && [ "$OUT/.stamp" -nt web/ui/package-lock.json ]; then
  exit 0
fi
(cd web/ui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$OUT"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE; do
  cp "web/ui/node_modules/swagger-ui-dist/$f" "$OUT/$f"
done
touch "$OUT/.stamp"
