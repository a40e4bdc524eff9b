#!/usr/bin/env bash
# Everything the test suite needs, then lint, types and the tests (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict p2pchat
.venv/bin/mypy daemon cli
scripts/build-web.sh --check
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
