#!/usr/bin/env bash
# Install p2pchat into .venv and start the daemon in the background.
# Data directory: $P2PCHAT_HOME, or --home DIR passed through to `p2pchat`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
.venv/bin/p2pchat "$@" daemon start
.venv/bin/p2pchat "$@" id
echo
echo "Open this link in your browser to use p2pchat there (keep it private: it opens your p2pchat):"
.venv/bin/p2pchat "$@" web || true
echo
echo "The CLI is .venv/bin/p2pchat (add $(pwd)/.venv/bin to your PATH)."
