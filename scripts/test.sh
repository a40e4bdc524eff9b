#!/usr/bin/env bash
# Everything the test suite needs, then lint, types and the tests (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh dev
# The js-libp2p peer of the interop tests (tests/net/jspeer, pinned by its package-lock.json;
# setup-env.sh installs npm when run as root). Without npm those two tests skip, saying why.
if command -v npm >/dev/null 2>&1 && [ ! -d tests/net/jspeer/node_modules/libp2p ]; then
    (cd tests/net/jspeer && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict p2pchat
.venv/bin/mypy daemon cli
scripts/build-web.sh --check
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
