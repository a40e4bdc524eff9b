#!/usr/bin/env bash
# Build the web app's one script, daemon/web/static/app.js, from its ES modules in
# daemon/web/app/ with esbuild (pinned by daemon/web/package-lock.json). The result is
# committed: a user, an install and the daemon never build anything, and nothing is fetched
# at run time. One file instead of 17 modules takes ~100 ms off the page's first load
# (bench/bench_web.py).
#
#   scripts/build-web.sh          rebuild static/app.js after changing daemon/web/app/
#   scripts/build-web.sh --check  exit 1 if static/app.js is not what the sources build to
set -euo pipefail
cd "$(dirname "$0")/../daemon/web"

if [ ! -x node_modules/.bin/esbuild ]; then
    command -v npm >/dev/null || { echo "build-web: npm (Node.js) is needed to build the web app" >&2; exit 2; }
    npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2
fi

build() {
    node_modules/.bin/esbuild app/main.js --bundle --format=esm --target=es2020 \
        --charset=utf8 --log-level=warning --outfile="$1" \
        --banner:js="// p2pchat's web app, built by scripts/build-web.sh from daemon/web/app/ (edit those, then rebuild). Includes Preact 10 (MIT) and htm 3 (Apache-2.0): licences in daemon/web/app/vendor/."
}

if [ "${1:-}" = "--check" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    build "$tmp/app.js"
    if ! cmp -s "$tmp/app.js" static/app.js; then
        echo "build-web: daemon/web/static/app.js is stale: run scripts/build-web.sh and commit it" >&2
        exit 1
    fi
    echo "build-web: static/app.js is up to date"
else
    build static/app.js
    echo "build-web: wrote daemon/web/static/app.js ($(wc -c <static/app.js) bytes)"
fi
