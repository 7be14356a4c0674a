#!/usr/bin/env bash
# Builds the `trigger-nats` Spin plugin (the host's NATS trigger, `host/src/bin/trigger-nats.rs`)
# in release mode, packs it the way Spin's plugin system expects, and installs it:
#
#   target/spin-plugin/trigger-nats-<version>-<os>-<arch>.tar.gz   the binary `trigger-nats` + LICENSE
#   target/spin-plugin/trigger-nats.json                           the plugin manifest (file:// url, sha256)
#   spin plugins install --file target/spin-plugin/trigger-nats.json --yes
#
# Usage: bash scripts/install-spin-plugin.sh [--pack-only]
#   --pack-only          build and pack, do not install
# Environment:
#   SPIN                 the Spin binary to install with (default: `spin` on PATH)
#   TRIGGER_NATS_BIN     pack this binary instead of building one (e.g. a debug build)
#   SPIN_PLUGIN_OUT      where to write the package and manifest (default: target/spin-plugin)
#   CARGO_TARGET_DIR     as for cargo
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
name="trigger-nats"
pack_only=false
for arg in "$@"; do
    case "$arg" in
        --pack-only) pack_only=true ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-spin-plugin: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

# The plugin's version is the host crate's: the workspace version ([workspace.package]).
version="${PLUGIN_VERSION:-$(awk '
    /^\[/ { in_package = ($0 == "[workspace.package]") }
    in_package && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
' "$root/Cargo.toml")}"
[ -n "$version" ] || { echo "install-spin-plugin: cannot read the version in Cargo.toml" >&2; exit 1; }

# This machine, as Spin names it in a plugin manifest.
case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=macos ;;
    *) echo "install-spin-plugin: unsupported OS $(uname -s) (Spin plugins: linux, macos)" >&2; exit 1 ;;
esac
case "$(uname -m)" in
    x86_64|amd64) arch=amd64 ;;
    aarch64|arm64) arch=aarch64 ;;
    *) echo "install-spin-plugin: unsupported architecture $(uname -m) (amd64, aarch64)" >&2; exit 1 ;;
esac

if [ -n "${TRIGGER_NATS_BIN:-}" ]; then
    binary="$TRIGGER_NATS_BIN"
else
    echo "install-spin-plugin: building $name (release)..." >&2
    (cd "$root" && cargo build --release --locked -p ticketing-host --bin "$name")
    binary="${CARGO_TARGET_DIR:-$root/target}/release/$name"
fi
[ -x "$binary" ] || { echo "install-spin-plugin: no executable at $binary" >&2; exit 1; }

out="${SPIN_PLUGIN_OUT:-$root/target/spin-plugin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/$name"
chmod 755 "$stage/$name"
cp "$root/LICENSE" "$stage/LICENSE"
tarball="$out/$name-$version-$os-$arch.tar.gz"
tar -czf "$tarball" -C "$stage" "$name" LICENSE

if command -v sha256sum >/dev/null 2>&1; then
    sha256="$(sha256sum "$tarball" | cut -d' ' -f1)"
else
    sha256="$(shasum -a 256 "$tarball" | cut -d' ' -f1)"
fi

# JSON string escaping for the one value that comes from outside (the path).
json_string() {
    local s="${1//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}
manifest="$out/$name.json"
cat > "$manifest" <<EOF
{
  "name": "$name",
  "description": "NATS JetStream trigger for the ticketing platform: delivers events to components exporting ticketing:platform/listener, with durable timers",
  "version": "$version",
  "spinCompatibility": ">=3.6, <5.0",
  "license": "Apache-2.0",
  "packages": [
    {
      "os": "$os",
      "arch": "$arch",
      "url": $(json_string "file://$tarball"),
      "sha256": "$sha256"
    }
  ]
}
EOF
echo "install-spin-plugin: packed $tarball" >&2
echo "install-spin-plugin: manifest $manifest" >&2

if $pack_only; then
    exit 0
fi

spin="${SPIN:-spin}"
if ! command -v "$spin" >/dev/null 2>&1; then
    {
        if [ -n "${SPIN:-}" ]; then
            echo "install-spin-plugin: SPIN=$SPIN is not an executable Spin binary."
        else
            echo "install-spin-plugin: no \`spin\` on PATH (or set SPIN=/path/to/spin)."
        fi
        echo "The plugin is packed; install it once Spin is there with:"
        echo "    spin plugins install --file $manifest --yes"
    } >&2
    exit 1
fi
"$spin" plugins install --file "$manifest" --yes
echo "install-spin-plugin: installed $name $version; \`spin up\` runs [[trigger.nats]] with it" >&2
