# Sourced by image/build-binaries.sh and tests/arm.sh: puts Zig and cargo-zigbuild on PATH,
# installing both from PyPI into a venv on first use (ziglang ships the compiler, cargo-zigbuild a
# prebuilt binary: ~15 s, nothing compiled). The venv keeps pip away from the system Python.
ZIGLANG_VERSION="${ZIGLANG_VERSION:-0.17.1}"
CARGO_ZIGBUILD_VERSION="${CARGO_ZIGBUILD_VERSION:-0.24.0}"
CLAWBOX_TOOLS="${CLAWBOX_TOOLS:-$HOME/.cache/clawbox-tools}"

zig_tools() {
  if ! "$CLAWBOX_TOOLS/bin/cargo-zigbuild" --version >/dev/null 2>&1; then
    echo "zig-tools: installing ziglang $ZIGLANG_VERSION, cargo-zigbuild $CARGO_ZIGBUILD_VERSION into $CLAWBOX_TOOLS" >&2
    python3 -m venv "$CLAWBOX_TOOLS"
    "$CLAWBOX_TOOLS/bin/pip" install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  fi
  # cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the venv's python has it.
  export PATH="$CLAWBOX_TOOLS/bin:$PATH"
}
