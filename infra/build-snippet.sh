#!/usr/bin/env bash
# Minify the visitor snippet: widget/static/calltrack.js -> widget/static/calltrack.min.js.
# The server sends calltrack.min.js (committed, so `make run` needs no Node.js); rebuild it
# after every change to calltrack.js (`make snippet`); tests/test_snippet_size.py fails while
# the committed file is stale. Terser is pinned in infra/snippet/package-lock.json.
# Usage: bash infra/build-snippet.sh [OUTPUT]   (default: widget/static/calltrack.min.js)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-widget/static/calltrack.min.js}
dir=infra/snippet
if [ ! -x "$dir/node_modules/.bin/terser" ]; then
  command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+" >&2; exit 1; }
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
fi
# Locals are renamed, properties are not (the collect protocol and the merchant's
# `window.calltrack` API keep their names).
"$dir/node_modules/.bin/terser" widget/static/calltrack.js \
  --ecma 2020 --compress passes=2 --mangle --output "$out"
