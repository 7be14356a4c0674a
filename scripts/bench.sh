#!/usr/bin/env bash
# Runs the benchmarks (BENCHMARKS.md): builds the release host, the bench and the
# components, installs `wasmtime` (wasmtime-cli 48, the host's wasmtime version) for the
# `wasmtime serve` comparison when it is missing, then runs `ticketing-bench` with the
# arguments given (e.g. `bash scripts/bench.sh --smoke`, `bash scripts/bench.sh -c 32 -d 10`).
#
# Set BENCH_SKIP_WASMTIME_INSTALL=1 to skip the install (a cold `cargo install` of
# wasmtime-cli takes a long time on a small machine); the bench then reports the
# `wasmtime serve` row as not measured.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wasmtime >/dev/null 2>&1 && [ "${BENCH_SKIP_WASMTIME_INSTALL:-0}" != 1 ]; then
    echo "bench: installing wasmtime-cli 48 (for \`wasmtime serve\`)" >&2
    cargo install wasmtime-cli --version '^48.0' --locked || \
        echo "bench: wasmtime-cli install failed; \`wasmtime serve\` will not be measured" >&2
fi

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release --locked -p ticketing-host -p ticketing-bench
# The app's components, as spin.toml builds them, and the bench's own `hello`.
target/release/ticketing build --from spin.toml
cargo build --target wasm32-wasip2 --release --locked -p ticketing-hello
exec target/release/ticketing-bench "$@"
