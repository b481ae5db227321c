#!/usr/bin/env bash
# Boots the SD image from image/build.sh under qemu-system-aarch64 (TCG, virt machine, the image's
# own kernel and initrd, -snapshot so the image is not changed) and waits until systemd reports
# clawbox.service started: the unit is Type=notify, so systemd says "Started" only after clawbox
# sent READY=1. Exit 0 on success, 1 on timeout or failure. Not part of CI (minutes under TCG).
# Usage: image/boot-test.sh [timeout seconds, default 600]
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT="${1:-600}"
IMG=dist/clawbox-pi.img
for f in "$IMG" dist/clawbox-pi.vmlinuz dist/clawbox-pi.initrd; do
  [ -f "$f" ] || { echo "boot-test: $f missing: run image/build.sh first" >&2; exit 1; }
done
command -v qemu-system-aarch64 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null
}

LOG=dist/boot-test.log
: > "$LOG"
# restrict=on: the guest gets DHCP from qemu's user network but can reach nothing outside it.
# forward_to_console: clawbox's own log lines (journal) appear on the serial console too.
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 512 -nographic -no-reboot -snapshot \
  -kernel dist/clawbox-pi.vmlinuz -initrd dist/clawbox-pi.initrd \
  -append "root=LABEL=CLAWROOT ro rootwait console=ttyAMA0 panic=-1 systemd.journald.forward_to_console=1" \
  -drive if=none,id=sd,file="$IMG",format=raw -device virtio-blk-pci,drive=sd \
  -nic user,restrict=on,model=virtio-net-pci \
  </dev/null >"$LOG" 2>&1 &
qemu=$!
trap 'kill "$qemu" 2>/dev/null || true' EXIT

start=$(date +%s)
result=1
while [ $(( $(date +%s) - start )) -lt "$TIMEOUT" ]; do
  if grep -q 'Started clawbox.service' "$LOG"; then result=0; break; fi
  if grep -qE 'Failed to start clawbox.service|clawbox.service: Failed|Kernel panic' "$LOG"; then break; fi
  kill -0 "$qemu" 2>/dev/null || break
  sleep 2
done
elapsed=$(( $(date +%s) - start ))
echo "--- serial console (clawbox lines and systemd's verdict; full log: $LOG)"
grep -aE 'clawbox|CLAW|Reached target|Kernel panic|Failed' "$LOG" | tail -n 40 || true
if [ "$result" = 0 ]; then
  echo "boot-test: clawbox.service started (READY=1) ${elapsed} s after launch"
else
  echo "boot-test: FAILED after ${elapsed} s (see $LOG)" >&2
fi
exit "$result"
