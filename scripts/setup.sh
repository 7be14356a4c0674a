#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine: the wasm32-wasip2 target, the
# servers the integration tests start (redis-server, nats-server), and for the browser tests
# Debian's chromium, Node.js and playwright-core (host/tests/browser), and what the README test
# uses (curl, iproute2's ip, util-linux's unshare). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nats-server >/dev/null || missing+=(nats-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# host/tests/readme.rs runs the README's commands (curl among them) in namespaces of their own.
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian packages start system services; the tests start their own servers on free ports.

# playwright-core, at the version package-lock.json pins; it drives the chromium above.
if [ ! -f host/tests/browser/node_modules/playwright-core/package.json ]; then
  echo "installing playwright-core (host/tests/browser)"
  npm ci --prefix host/tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi

# schemathesis (PyPI), which host/tests/openapi_conformance.rs runs against the app: in a
# virtualenv of its own under target/, at a pinned version (a fixed seed then generates the
# same requests everywhere).
schemathesis_version=4.32.5
schemathesis_venv=target/tools/schemathesis
if ! "$schemathesis_venv/bin/schemathesis" --version 2>/dev/null | grep -q " $schemathesis_version\$"; then
  echo "installing schemathesis $schemathesis_version ($schemathesis_venv)"
  python3 -m venv "$schemathesis_venv"
  "$schemathesis_venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$schemathesis_version"
fi
