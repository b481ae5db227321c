#!/usr/bin/env bash
# Static release binaries for the box: dist/clawbox-aarch64 (Pi 3/4/5, Zero 2 W on a 64-bit OS) and
# dist/clawbox-armv7 (32-bit Pi OS). Installs what it needs on a clean Debian-like machine with
# rustup and Python 3, then builds. Usage: image/build-binaries.sh [aarch64|armv7 ...] (default both).
#
# Linker: Zig through cargo-zigbuild, both from PyPI (ziglang ships the compiler, cargo-zigbuild a
# prebuilt binary: nothing to compile, ~15 s). Zig links against musl and compiles ring's C/asm with
# musl's own headers for every target; Debian's gcc-*-linux-gnu cross compilers would compile
# against glibc headers and bring no musl libc/crt for armv7, whose std has to be built here.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)

log() { echo "build-binaries: $*" >&2; }

# shellcheck source=image/zig-tools.sh
. image/zig-tools.sh
zig_tools

have_target() { rustup target list --installed | grep -qx "$1"; }
need_src=0
for t in "${targets[@]}"; do
  case "$t" in
    aarch64) have_target aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl ;;
    armv7)
      # The prebuilt std exists upstream, but some mirrors lack it: then std is built from rust-src.
      have_target armv7-unknown-linux-musleabihf || rustup target add armv7-unknown-linux-musleabihf 2>/dev/null \
        || need_src=1 ;;
    *) log "unknown target '$t' (aarch64 or armv7)"; exit 2 ;;
  esac
done
if [ "$need_src" = 1 ] && ! rustup component list --installed | grep -q '^rust-src'; then
  rustup component add rust-src
fi

# --- Build ----------------------------------------------------------------------------------------
mkdir -p dist
target_dir="${CARGO_TARGET_DIR:-target}"
for t in "${targets[@]}"; do
  start=$(date +%s)
  case "$t" in
    aarch64)
      triple=aarch64-unknown-linux-musl
      cargo zigbuild --release --locked --target "$triple"
      ;;
    armv7)
      triple=armv7-unknown-linux-musleabihf
      if [ "$need_src" = 1 ]; then
        # No prebuilt std: build it (panic_unwind, not abort: the release profile keeps unwinding so
        # the supervisor can contain a panicking channel). Without rustc's self-contained musl crt
        # objects, Zig supplies crt1.o and libc.
        log "armv7: building std from rust-src (-Zbuild-std)"
        RUSTC_BOOTSTRAP=1 RUSTFLAGS="${RUSTFLAGS:-} -C link-self-contained=no" \
          cargo zigbuild --release --locked --target "$triple" -Zbuild-std=std,panic_unwind
      else
        cargo zigbuild --release --locked --target "$triple"
      fi
      ;;
  esac
  cp "$target_dir/$triple/release/clawbox" "dist/clawbox-$t"
  log "$t: dist/clawbox-$t, $(stat -c %s "dist/clawbox-$t") bytes, built in $(( $(date +%s) - start )) s"
  if command -v file >/dev/null; then
    info=$(file -b "dist/clawbox-$t")
    echo "  $info" >&2
    case "$info" in *"statically linked"*|*"static-pie linked"*) ;; *) log "$t is not static"; exit 1 ;; esac
  fi
done
