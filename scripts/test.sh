#!/usr/bin/env bash
# The project's test command: installs prerequisites, then runs every test of the workspace
# (guest library unit tests, host unit tests, and the black-box tests that start real
# redis-server / ticketing processes; those build the components through `ticketing build`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# --no-fail-fast: a red run shows every failing test binary, not only the first.
cargo test --workspace --locked --no-fail-fast "$@"
