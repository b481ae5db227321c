#!/usr/bin/env bash
# Boots the SD image from image/build.sh under qemu-system-aarch64 (TCG, virt machine, Cortex-A53
# like the Pi 3 / Zero 2 W, 512 MB, the image's own kernel and initrd, -snapshot so the image is not
# changed) and waits until systemd reports clawbox.service started: the unit is Type=notify, so
# systemd prints "Started clawbox.service" only after clawbox sent READY=1. A test-only unit, handed
# in on the kernel command line as a systemd credential (nothing is added to the image), then prints
# `systemctl show -p ActiveState -p SubState -p StatusText clawbox` and `clawbox status` on the
# serial console. Exit 0 when READY was reached, 1 on timeout or failure. Not part of CI (minutes
# under TCG). Never touches the image or the network (qemu's user network with restrict=on).
# Usage: image/boot-test.sh [timeout seconds, default 900]
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT="${1:-900}"
# After READY, how long to wait for the report unit's lines before stopping qemu anyway.
REPORT_GRACE=120
IMG=dist/clawbox-pi.img
for f in "$IMG" dist/clawbox-pi.vmlinuz dist/clawbox-pi.initrd; do
  [ -f "$f" ] || { echo "boot-test: $f missing: run image/build.sh first" >&2; exit 1; }
done
command -v qemu-system-aarch64 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null
}

# The report unit, passed as the credential systemd.extra-unit.* (systemd-debug-generator writes it
# out at boot) and pulled in with systemd.wants=. After=clawbox.service: it runs once clawbox's start
# job finished, i.e. after READY=1 (or after the start failed, which it then shows).
report_unit='[Unit]
Description=clawbox boot test report
After=clawbox.service
[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/usr/bin/echo BOOT-REPORT begin
ExecStart=/usr/bin/systemctl show -p ActiveState -p SubState -p StatusText -p NRestarts -p ExecMainStatus clawbox.service
ExecStart=-/usr/bin/clawbox status
ExecStart=/usr/bin/echo BOOT-REPORT end
'
report_b64=$(printf '%s' "$report_unit" | base64 -w0)

LOG=dist/boot-test.log
: > "$LOG"
# restrict=on: the guest gets DHCP from qemu's user network but can reach nothing outside it.
# forward_to_console: clawbox's own log lines (journal) appear on the serial console too.
# systemd.firstboot=0: as in the image's cmdline.txt (empty machine-id on a read-only root).
qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 512 -nographic -no-reboot -snapshot \
  -kernel dist/clawbox-pi.vmlinuz -initrd dist/clawbox-pi.initrd \
  -append "root=LABEL=CLAWROOT ro rootwait console=ttyAMA0 panic=-1 net.ifnames=0 systemd.firstboot=0 systemd.journald.forward_to_console=1 systemd.set_credential_binary=systemd.extra-unit.clawbox-boot-report.service:$report_b64 systemd.wants=clawbox-boot-report.service" \
  -drive if=none,id=sd,file="$IMG",format=raw -device virtio-blk-pci,drive=sd \
  -nic user,restrict=on,model=virtio-net-pci \
  </dev/null >"$LOG" 2>&1 &
qemu=$!
trap 'kill "$qemu" 2>/dev/null || true' EXIT

start=$(date +%s)
result=1
ready_at=
while [ $(( $(date +%s) - start )) -lt "$TIMEOUT" ]; do
  if [ -z "$ready_at" ] && grep -aq 'Started clawbox.service' "$LOG"; then
    result=0
    ready_at=$(( $(date +%s) - start ))
  fi
  if [ -n "$ready_at" ]; then
    grep -aq 'BOOT-REPORT end' "$LOG" && break
    [ $(( $(date +%s) - start - ready_at )) -lt "$REPORT_GRACE" ] || break
  fi
  if grep -aqE 'Failed to start clawbox.service|clawbox.service: Failed|Kernel panic' "$LOG"; then
    result=1
    break
  fi
  kill -0 "$qemu" 2>/dev/null || break
  sleep 2
done
elapsed=$(( $(date +%s) - start ))
echo "--- serial console excerpt (full log: $LOG)"
grep -aE 'Linux version|clawbox|CLAW|BOOT-REPORT|StatusText=|ActiveState=|SubState=|NRestarts=|ExecMainStatus=|Reached target|Kernel panic|Failed' "$LOG" \
  | tail -n 60 || true
if [ "$result" = 0 ]; then
  echo "boot-test: clawbox.service started (READY=1) ${ready_at} s after launch"
else
  echo "boot-test: FAILED after ${elapsed} s (see $LOG)" >&2
fi
exit "$result"
