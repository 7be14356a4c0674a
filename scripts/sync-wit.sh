#!/usr/bin/env bash
# Copies the standard WIT packages the platform builds on (Spin 2.0 interfaces, wasi:keyvalue
# draft2 and the WASI 0.2.0 packages they reference) verbatim from the published spin-sdk crate
# into wit/deps/, so the host's bindings use exactly the interfaces the components import.
# Run it after changing the spin-sdk version; `cargo test` checks that the copies still match.
set -euo pipefail
cd "$(dirname "$0")/.."
sdk_dir=$(cargo metadata --format-version 1 --manifest-path components/common/Cargo.toml \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="spin-sdk").rsplit("/",1)[0])')
packages=(spin@2.0.0 keyvalue-2024-10-17)
for wasi in cli clocks filesystem http io random sockets; do
  packages+=("$wasi@0.2.0" "$wasi-2023-10-18")
done
rm -rf wit/deps
mkdir -p wit/deps
for p in "${packages[@]}"; do
  cp -r "$sdk_dir/wit/deps/$p" wit/deps/
done
echo "copied ${#packages[@]} WIT packages from $sdk_dir"
