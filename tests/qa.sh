#!/usr/bin/env bash
# The QA matrix (README "QA"): runs every scenario against the fakes and the real binary, and
# writes a Markdown report: scenario, PASS/FAIL, time, what it proves, the figures it measured.
#
#   tests/qa.sh [--full] [--only REGEX] [--report FILE]
#   tests/qa.sh --list [--only REGEX]   (resolve each scenario to its tests and print them; runs nothing)
#
# Short mode (the default; CI runs it): the soak, crash loop, isolation and fuzzing run their CI
# lengths. --full is the operator's run whose report is committed as tests/QA-REPORT.md: a 10-minute
# soak, 200 SIGKILLs, a 1-minute blackhole, 10 minutes per fuzz target.
# Each scenario's result is kept under $QA_DIR (outside the clone); --only reruns some and the report
# is rebuilt from every result present, each stamped with the commit and time it ran.
# A report comes from one commit: qa.sh refuses (exit 3, naming the stale scenarios and their
# commits) to assemble results of another commit, or of a tree with uncommitted changes (the report
# file itself aside), unless this run reran every scenario. `--only` reruns failing scenarios at the
# same, committed HEAD.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=short
only=""
report=""
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --full) mode=full ;;
    --short) mode=short ;;
    --only) only="$2"; shift ;;
    --report) report="$2"; shift ;;
    --list) list=1 ;;
    *) echo "usage: tests/qa.sh [--full] [--only REGEX] [--report FILE] | --list [--only REGEX]" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/clawbox-ci-target}"
qa_dir="${QA_DIR:-$CARGO_TARGET_DIR/qa/$mode}"
mkdir -p "$qa_dir"
if [ "$mode" = full ]; then
  export CLAWBOX_SOAK_SECS=600 CLAWBOX_CRASH_KILLS=200 CLAWBOX_CRASH_KILLS_PACED=40 CLAWBOX_ISOLATION_SECS=60
  fuzz_secs=600
  report="${report:-tests/QA-REPORT.md}"
else
  fuzz_secs=30
  report="${report:-$qa_dir/report.md}"
fi

# id | scenario | how it runs | what passing proves.
# "test BIN MODULE NAME..." runs those tests of module MODULE (tests/BIN/MODULE.rs) in the test binary
# BIN (exact names: MODULE::NAME), every one of them; "test BIN MODULE" runs every test of that
# module; "fuzz" runs tests/fuzz.sh.
matrix=$(cat <<'EOF'
single-turn|Single turn|test flows flow streamed_turns_keep_history_until_a_reset|A message to the OpenAI-compatible fake is answered with the streamed reply, through the real binary.
continuity|Multi-turn continuity|test flows flow streamed_turns_keep_history_until_a_reset|Turn 2's request carries turn 1's question and answer (session history per chat).
reset|🗑️ reset|test flows flow streamed_turns_keep_history_until_a_reset|A message that is only 🗑️ is confirmed and the next turn has no history.
batching|Messages during a turn are batched|test flows flow three_messages_during_a_turn_become_exactly_one_next_turn|Three messages sent while a turn is in flight become exactly one next turn.
media|Media placeholder|test flows whatsapp_flow friend_gets_the_echo_stranger_gets_nothing_media_is_a_placeholder|A WhatsApp image with a caption reaches the agent as a media placeholder plus the caption.
media-telegram|Media placeholder (Telegram)|test protocols telegram_channel media_groups_edits_and_unsupported_kinds_convert|Photos, documents, voice, stickers become placeholders with captions; groups are dropped.
restart|Restart recovery|test flows restart sigkill_mid_turn_then_restart_answers_every_accepted_message_once crash_after_accept_before_anything_else crash_after_the_reply_was_recorded_but_not_sent crash_after_sending_before_marking_sent_does_not_send_twice on_the_console_a_chunk_in_doubt_is_not_printed_twice telegram_crash_before_the_request_left_is_answered_exactly_once telegram_crash_after_the_send_is_not_sent_again telegram_429_then_a_crash_during_the_wait_loses_nothing telegram_sends_cut_mid_flight_are_settled_by_probing|SIGKILL mid-turn and at each crash point: every accepted message answered exactly once after restart; on Telegram with the shipped pacing and replies in two chunks, a crash before the request left, after the send, during a 429 wait and mid-flight (answer lost, link reset) ends with every chunk exactly once (settled by probing).
restart-whatsapp|Restart without re-pairing|test flows whatsapp_flow pair_by_qr_then_restarts_and_sigkill_never_need_pairing_again a_crash_between_pair_success_and_the_515_reconnect_needs_no_pairing_again|Restarts and SIGKILLs (also between pair success and the 515 reconnect) never need pairing again.
catch-up|Offline catch-up|test flows whatsapp_flow messages_sent_while_down_are_answered_once_after_restart sigkill_mid_traffic_then_every_message_is_answered_once|Messages sent while the box was down are delivered by the server's offline queue and answered once.
catch-up-telegram|Offline catch-up (Telegram)|test flows telegram_flow sigkill_after_accept_before_reply_gives_exactly_one_reply crash_before_the_offset_is_confirmed_is_deduplicated a_restart_after_the_reply_does_not_replay_it|Telegram redelivers unconfirmed updates after a crash: deduplicated, one reply, no replay after a restart.
concurrent|Concurrent chats isolation|test flows flow two_chats_at_once_never_see_each_others_replies|Two chats with overlapping turns each get only their own reply.
ack-timeout|Ack timeout|test flows flow ack_timeout_ends_the_turn_politely|An agent that never starts answering: the turn ends with the polite message, not silence.
accumulation-timeout|Accumulation timeout|test flows flow accumulation_timeout_ends_a_stalled_stream_politely|A stream that stalls mid-reply: the turn ends politely, nothing hangs.
pacing|Pacing adherence|test protocols pacing typing_gaps_and_chunks_are_exactly_as_configured a_10000_character_reply_is_three_telegram_messages_on_boundaries|Typing presence, chunk gaps and reply gaps are exactly the configured pacing (paused clock); long replies split on boundaries.
rate-limits|Per-chat rate limit (Telegram)|test protocols telegram_channel sends_to_one_chat_are_a_second_apart too_many_requests_on_poll_waits_exactly_retry_after|Sends to one chat are ≥ 1 s apart; a 429 waits exactly retry_after.
allowlist|Allowlist|test flows flow a_stranger_causes_no_agent_call_no_typing_no_reply|A stranger causes no agent call, no typing and no reply; the drop is counted.
self-chat|WhatsApp self chat (the default mode)|test flows whatsapp_flow the_owner_writes_in_the_self_chat_and_gets_one_prefixed_answer_there|The owner writes in "message yourself" on the phone: one answer comes back there with the prefix, and the box never answers its own answer.
allowlist-whatsapp|Allowlist (WhatsApp)|test flows whatsapp_flow friend_gets_the_echo_stranger_gets_nothing_media_is_a_placeholder|A WhatsApp stranger gets nothing; the friend gets the answer.
reconnect-drop|Reconnect: dropped link and 515|test flows whatsapp_flow drop_and_515_reconnect_within_seconds|A dropped WhatsApp connection and a 515 stream restart reconnect within seconds.
reconnect-blackhole|Reconnect: dead link|test flows whatsapp_flow a_blackholed_link_is_detected_within_30s_and_heals_within_5s|A blackholed link is given up within 30 s, and a new connection logs in within 5 s of healing.
reconnect-logout|Reconnect: logged out|test flows whatsapp_flow logged_out_wipes_whatsapp_only_and_says_pair_again|Logged out: WhatsApp state wiped, "pair again" shown, other channels untouched, no loop.
reconnect-conflict|Reconnect: replaced session|test flows whatsapp_flow a_conflict_stops_reconnecting|Another client took the session: clawbox stops and says so instead of fighting it.
reconnect-telegram|Reconnect: Telegram 409/429/401/5xx|test flows telegram_flow conflict_then_success_while_the_console_keeps_working rate_limited_polls_wait_retry_after_while_the_console_keeps_working a_rejected_token_stops_telegram_only|409 recovers, 429 waits retry_after, 401 stops Telegram only, the console keeps answering throughout.
reconnect-openclaw|Reconnect: OpenClaw gateway|test protocols openclaw_agent missed_ticks_make_it_reconnect a_turn_in_flight_during_a_drop_is_retried_with_the_same_key_and_runs_once a_run_that_finished_during_the_drop_is_read_back_from_history|Missed ticks reconnect; a turn cut by a drop runs once (same idempotency key) or is read back from history.
soak|Soak with faults|test system soak|Traffic on WhatsApp and Telegram with random faults on every link (some WhatsApp blackholes outlast dead-link detection): every message answered exactly once from the raw deliveries (0 lost, 0 duplicates), reconnect within 5 s of each heal, RSS flat.
crash-loop|Crash loop|test system crash_loop|SIGKILLs at random instants during traffic and pairing: no re-pairing, the store opens every time, and every message answered exactly once on both channels, counted from the raw deliveries the fakes recorded (0 lost, 0 duplicates, no tolerance); a second run with the shipped pacing, replies in two chunks and a Telegram outage, 429 or lost answer in each kill window.
isolation|Channel isolation|test system isolation|WhatsApp blackholed while Telegram traffic flows: Telegram latency p99 within 10 % of undisturbed; /healthz and status answer.
malformed|Malformed frames from every server|test flows malformed|Bad frames from WhatsApp, Telegram, OpenAI and OpenClaw fakes: a clear error, the link recovers, nothing lost.
security|Security matrix|test flows security|Strangers, replays, self-chat echo, oversized messages, state dir permissions, secrets never in logs.
idle|Idle box writes nothing|test system idle|WhatsApp connected and Telegram polling, 30 s idle: no store commit, no fsync (the SD card is spared).
config|Bad config and damaged store|test service config|Bad configs exit 78 with file:line:col; a damaged store exits 65 with the recovery command; no panic.
watchdog|systemd notify and watchdog|test service systemd_notify|READY=1, STATUS= per channel, STOPPING=1; WATCHDOG=1 stops when the store writer, the router loop or the Telegram poll loop really hangs (the log names it), and keeps flowing on an idle box, connected or offline.
fuzz|Fuzzing every parser|fuzz|Every cargo-fuzz target runs its length with 0 crashes under a 512 MiB RSS limit.
EOF
)

# What this run is stamped with: HEAD, whether the tree differs from it (tracked or untracked files;
# the report file is left out, so a --full run's rewrite of it does not make the next --only dirty),
# and an id telling this run's results from older ones.
head=$(git rev-parse HEAD 2>/dev/null || echo unknown)
short=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
exclude=(":(exclude)tests/QA-REPORT.md")
case "$report" in /*) ;; *) exclude+=(":(exclude)$report") ;; esac
if [ "$head" = unknown ]; then
  changes="(not a git checkout: the commit cannot be told)"
else
  changes=$(git status --porcelain --untracked-files=normal -- . "${exclude[@]}")
fi
dirty=0
[ -z "$changes" ] || dirty=1
stamp="$short$([ "$dirty" = 0 ] || echo +dirty)"
run_id="$(date -u +%Y%m%dT%H%M%S)-$$"

# The exact test names a "test BIN MODULE [NAME...]" scenario runs, one a line (MODULE::NAME), read
# from the binary's own list, so a renamed or moved test is found missing, never silently skipped.
# Fails (naming what is missing) when a named test does not exist or a module has no tests.
resolve() {
  local bin="$1" module="$2" listed n
  shift 2
  listed=$(cargo test --locked -q --test "$bin" -- --list 2>/dev/null | sed -n 's/: test$//p') || {
    echo "qa: cannot list the tests of test binary $bin (cargo test --test $bin -- --list)" >&2
    return 1
  }
  if [ $# -eq 0 ]; then
    grep -E "^${module}::" <<<"$listed" || {
      echo "qa: test binary $bin has no module $module" >&2
      return 1
    }
    return 0
  fi
  for n in "$@"; do
    grep -qxF "$module::$n" <<<"$listed" || {
      echo "qa: test binary $bin has no test $module::$n" >&2
      return 1
    }
    echo "$module::$n"
  done
}

run_one() {
  local id="$1" how="$2" log="$qa_dir/$1.log" start end status
  start=$(date +%s)
  set -- $how
  local kind="$1"; shift
  if [ "$kind" = fuzz ]; then
    if bash tests/fuzz.sh "$fuzz_secs" "${FUZZ_JOBS:-1}" >"$log" 2>&1; then status=PASS; else status=FAIL; fi
  else
    local bin="$1" resolved names=()
    # PASS needs every resolved test to have passed: a renamed test must not pass by matching
    # nothing, nor a scenario by running only some of its tests.
    if resolved=$(resolve "$@" 2>"$log") && mapfile -t names <<<"$resolved" && [ ${#names[@]} -gt 0 ] &&
      cargo test --locked -q --test "$bin" -- --test-threads=1 --nocapture --exact "${names[@]}" >>"$log" 2>&1 &&
      grep -q "test result: ok. ${#names[@]} passed" "$log"; then status=PASS; else status=FAIL; fi
  fi
  end=$(date +%s)
  printf '%s\n' "$status" "$((end - start))" "$(date -u +%Y-%m-%dT%H:%MZ) $stamp" \
    "commit $head" "dirty $dirty" "run $run_id" >"$qa_dir/$id.result"
  echo "qa: $id: $status ($((end - start)) s)"
}

if [ "$list" = 1 ]; then
  bad=0
  while IFS='|' read -r id title how proves; do
    [ -n "$id" ] || continue
    if [ -n "$only" ] && ! [[ "$id" =~ $only ]]; then continue; fi
    set -- $how
    if [ "$1" = fuzz ]; then
      echo "$id: tests/fuzz.sh"
      continue
    fi
    shift
    if names=$(resolve "$@"); then
      echo "$id: cargo test --test $1 -- --exact $(echo $names)"
    else
      echo "$id: UNRESOLVED ($how)"
      bad=1
    fi
  done <<<"$matrix"
  exit "$bad"
fi

while IFS='|' read -r id title how proves; do
  [ -n "$id" ] || continue
  if [ -z "$only" ] || [[ "$id" =~ $only ]]; then run_one "$id" "$how"; fi
done <<<"$matrix"

# --- one commit per report --------------------------------------------------------------------------
# A result counts when this run made it, or when it ran on this very commit with no uncommitted
# changes and the tree is still clean; anything else is stale.
stale=()
while IFS='|' read -r id title how proves; do
  [ -n "$id" ] && [ -f "$qa_dir/$id.result" ] || continue
  when="" c="" d="" r=""
  { read -r _; read -r _; read -r when; read -r c; read -r d; read -r r; } <"$qa_dir/$id.result" || true
  c=${c#commit }; d=${d#dirty }; r=${r#run }
  if [ "$r" = "$run_id" ]; then continue; fi
  if [ "$dirty" = 0 ] && [ "$head" != unknown ] && [ "$c" = "$head" ] && [ "$d" = 0 ]; then continue; fi
  note=""
  [ "$d" != 1 ] || note=", uncommitted changes"
  stale+=("$id: ran ${when:-at an unknown time} (commit ${c:-unrecorded}$note)")
done <<<"$matrix"
if [ ${#stale[@]} -gt 0 ]; then
  {
    echo "qa: refusing to build a report that mixes commits: this is $stamp (HEAD $head)."
    if [ "$dirty" = 1 ]; then
      echo "qa: the tree has uncommitted changes, so no earlier result can be tied to it:"
      printf '%s\n' "$changes" | head -10 | sed 's/^/      /'
    fi
    echo "qa: results from another commit or tree (${#stale[@]}):"
    printf '  %s\n' "${stale[@]}"
    ids=$(printf '%s\n' "${stale[@]}" | cut -d: -f1 | paste -sd'|')
    again="tests/qa.sh"
    [ "$mode" != full ] || again="tests/qa.sh --full"
    if [ "$dirty" = 1 ]; then
      echo "qa: commit the changes, then rerun what is not from the new HEAD ($again --only 'REGEX'),"
    else
      echo "qa: rerun those at HEAD ($again --only '^($ids)\$'),"
    fi
    echo "qa: or rerun every scenario ($again). The report ($report) was not written."
  } >&2
  exit 3
fi

# --- the report -------------------------------------------------------------------------------------
evidence() {
  # The figures a scenario printed (lines "QA …" / "MEASURED …"), the test counts, fuzz lines.
  local log="$qa_dir/$1.log"
  [ -f "$log" ] || return 0
  grep -E '^\.?(QA |MEASURED |fuzz |test result: )' "$log" |
    sed -E 's/^\.//; s/^test result: ok\. ([0-9]+) passed; ([0-9]+) failed.*/\1 tests passed, \2 failed/; s/^QA ([^:]*): /\1: /; s/\|/\\|/g' |
    head -16 | sed 's/$/<br>/' | tr -d '\n' | sed 's/<br>$//'
}

pass=0; fail=0; missing=0
{
  echo "# clawbox QA report ($mode mode)"
  echo
  echo "Generated by \`tests/qa.sh$([ "$mode" = full ] && echo ' --full')\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d),"
  echo "every result from commit $stamp$([ "$dirty" = 1 ] && echo ' (uncommitted changes: all from this one run)')."
  echo "Lengths: soak ${CLAWBOX_SOAK_SECS:-default} s, crash loop ${CLAWBOX_CRASH_KILLS:-default} kills (paced: ${CLAWBOX_CRASH_KILLS_PACED:-default}),"
  echo "blackhole ${CLAWBOX_ISOLATION_SECS:-default} s, fuzzing $fuzz_secs s per target (\"default\" = the test's CI length)."
  echo "Every scenario runs the real \`clawbox\` binary or its modules against fakes that speak the real wire"
  echo "protocols (Noise + binary nodes + Signal for WhatsApp, Bot API JSON, OpenAI SSE, OpenClaw frames)."
  echo
  echo "| Scenario | Result | Time | What passing proves | Evidence (figures measured in this run) | Ran |"
  echo "|---|---|---|---|---|---|"
  while IFS='|' read -r id title how proves; do
    [ -n "$id" ] || continue
    if [ -f "$qa_dir/$id.result" ]; then
      { read -r status; read -r secs; read -r when; } <"$qa_dir/$id.result"
      [ "$status" = PASS ] && pass=$((pass + 1)) || fail=$((fail + 1))
      echo "| $title | **$status** | ${secs} s | $proves | $(evidence "$id") | $when |"
    else
      missing=$((missing + 1))
      echo "| $title | not run | | $proves | | |"
    fi
  done <<<"$matrix"
  echo
  echo "Totals: $pass PASS, $fail FAIL, $missing not run."
} >"$report"
echo "qa: $pass PASS, $fail FAIL, $missing not run; report: $report"
[ "$fail" = 0 ] && [ "$missing" = 0 ]
