#!/usr/bin/env bash
# Shared by install.sh and test.sh: make .venv with p2pchat installed (plus extras given as
# $1, e.g. "dev"). Installs the few system packages a fresh Debian lacks when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "p2pchat needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi

# py-libp2p's dependency fastecdsa builds from source: it needs a C compiler and GMP headers.
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -e /usr/include/gmp.h ] || [ -e /usr/include/x86_64-linux-gnu/gmp.h ] \
    || [ -e /usr/include/aarch64-linux-gnu/gmp.h ] || missing+=(libgmp-dev)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# The NAT tests (run as root only) build routers out of network namespaces with iptables.
# The browser tests drive Debian's chromium through Playwright (never `playwright install`);
# npm installs the pinned esbuild that checks the web app's committed bundle.
if [ "${1:-}" = dev ] && [ "$(id -u)" = 0 ]; then
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    # scripts/build-web.sh --check (the committed web bundle is what its sources build to).
    command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing system packages: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "please install these system packages first: ${missing[*]}" >&2
        exit 1
    fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
extra=${1:-}
if [ -n "$extra" ]; then
    .venv/bin/python -m pip install -q -e ".[$extra]"
else
    .venv/bin/python -m pip install -q -e .
fi
