#!/usr/bin/env bash
# ARM checks for CI (.ci/run) and by hand: the release feature set carries no test-only danger
# feature, then the aarch64 musl build of the test suite's fast part runs under qemu-aarch64 user
# emulation (binfmt_misc is not available in containers, so qemu is the cargo runner).
# Debug profile: this proves the code behaves on ARM; the release binary is image/build-binaries.sh.
# Extra arguments go to `cargo test` after the selection (e.g. `tests/arm.sh -- --nocapture`).
# `tests/arm.sh --build-only` builds the test binary and stops (CI starts it early, beside the
# native tests). ARM artifacts live in <target dir>/arm, apart from the host build's, so the two
# never wait on each other's build-directory lock.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=aarch64-unknown-linux-musl
build_only=0
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/arm"

# --- The release build must verify WhatsApp's certificate chain ------------------------------------
# The fake WhatsApp server's dev-dependency enables danger-skip-cert-chain-verify for test builds
# only; a normal (non-dev) build of the box must not see it.
echo "== release features: no danger-* feature in the box's dependency graph"
tree=$(cargo tree --locked -e no-dev,features --target "$TRIPLE" -i wacore-noise)
grep -q '^wacore-noise' <<<"$tree" || { echo "tests/arm.sh: cargo tree found no wacore-noise" >&2; exit 1; }
if grep -n 'danger' <<<"$tree"; then
  echo "tests/arm.sh: a danger-* feature is enabled in the release build (above)" >&2
  exit 1
fi
echo "ok: wacore-noise has no danger-* feature outside dev builds"

# --- Tools --------------------------------------------------------------------------------------
rustup target list --installed | grep -qx "$TRIPLE" || rustup target add "$TRIPLE"
# shellcheck source=image/zig-tools.sh
. image/zig-tools.sh
zig_tools
if [ "$build_only" = 1 ]; then
  echo "== cargo test --lib --no-run on $TRIPLE (build only)"
  exec cargo-zigbuild test --locked --target "$TRIPLE" --lib --no-run "$@"
fi
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

# --- Tests under emulation ---------------------------------------------------------------------
# The unit tests (the binary-spawning integration tests stay with the native run). qemu is the
# cargo runner; a test that re-executes its own binary (systemd's notify child) needs the kernel to
# run ARM executables too, so the tests run in a private user namespace whose binfmt_misc has
# qemu-aarch64 registered (F flag: the interpreter is opened at registration).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static
qemu=$(command -v qemu-aarch64-static)
magic=$(cut -d: -f1-6 /usr/lib/binfmt.d/qemu-aarch64.conf)
echo "== cargo test --lib on $TRIPLE under qemu-aarch64-static"
start=$(date +%s)
unshare --user --map-root-user --mount bash -euo pipefail -c '
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  printf "%s:%s:F" "$0" "$1" > /proc/sys/fs/binfmt_misc/register
  shift
  exec "$@"
' "$magic" "$qemu" cargo-zigbuild test --locked --target "$TRIPLE" --lib "$@"
echo "tests/arm.sh: aarch64 build and tests took $(( $(date +%s) - start )) s"
