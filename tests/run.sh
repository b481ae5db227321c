#!/usr/bin/env bash
# The test command (README, and .ci/run): installs what the suite needs on a fresh Debian-like
# machine, then runs every test. Extra arguments go to `cargo test` (e.g. `tests/run.sh --test flows
# restart::`: the test binaries are tests/{protocols,flows,service,system}, a module per concern).
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd-analyze checks the unit file (tests/service/systemd_unit.rs).
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# unshare and ip put tests/service/offline.rs's daemon in a network namespace of its own.
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# tests/service/web.rs screenshots the pairing page in a real headless Chromium (and reads it back).
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

exec cargo test --locked "$@"
