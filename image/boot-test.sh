#!/usr/bin/env bash
# Boots the SD image from image/build.sh under qemu-system-aarch64 (TCG, virt machine, Cortex-A53
# like the Pi 3 / Zero 2 W, 512 MB, the image's own kernel and initrd) the way an owner first boots
# it: a copy of the image (dist/boot-test.img; the built image is not changed) gets a wifi.conf and
# a secret file (clawbox/telegram.token) on its FAT boot partition, as the owner puts them there from
# another computer. Passes when
#   - systemd reports clawbox.service started: the unit is Type=notify, so systemd prints
#     "Started clawbox.service" only after clawbox sent READY=1;
#   - clawbox-firstboot took both files (its journal lines on the console), and the running box
#     shows them where they belong: /etc/clawbox/telegram.token 0600 clawbox, the wpa_supplicant
#     config on the data partition 0600 root, wpa_supplicant@wlan0 enabled for it, the Wi-Fi
#     firmware package installed, both files gone from /boot/firmware;
#   - after qemu is killed (a power cut: nothing is shut down cleanly), the image itself shows the
#     same: the FAT partition no longer holds them (mtools), the data partition, its journal replayed
#     by e2fsck as the next boot would, holds them with those modes and owners (debugfs);
#   - Wi-Fi works with the written config, over simulated radios: virt has no Wi-Fi, so the kernel
#     command line loads mac80211_hwsim (two radios, wlan0 and wlan1; the image's own kernel module,
#     loaded for this test only), an access point with the test network runs on wlan1, and the
#     box's own wpa_supplicant@wlan0 must associate (WPA2-PSK) and networkd get a DHCP address;
#   - the token and the passphrase appear nowhere on the serial console.
# A report script on the copy's boot partition, run by a test-only unit handed in on the kernel
# command line as a systemd credential (nothing is added to the image itself), prints what the box
# sees on the serial console. Exit 0 when all of the above hold, 1 otherwise. Not part of CI
# (minutes under TCG). Never touches the network (qemu's user network with restrict=on).
# Usage: image/boot-test.sh [timeout seconds, default 900]
# The checks' helpers are called through check(): not unreachable.
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT="${1:-900}"
# After READY, how long to wait for the report unit's lines before stopping qemu anyway.
REPORT_GRACE=300
IMG=dist/clawbox-pi.img
TEST_IMG=dist/boot-test.img
for f in "$IMG" dist/clawbox-pi.vmlinuz dist/clawbox-pi.initrd; do
  [ -f "$f" ] || { echo "boot-test: $f missing: run image/build.sh first" >&2; exit 1; }
done
need=()
for p in qemu-system-aarch64:qemu-system-arm mcopy:mtools debugfs:e2fsprogs sfdisk:fdisk; do
  command -v "${p%%:*}" >/dev/null 2>&1 || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- The owner's files, on the boot partition of a copy ------------------------------------------
# Test values only. The passphrase has a quote, a '#' and spaces: wpa_supplicant's parser must
# keep all of them.
TOKEN='7345112233:AAH-boot-test-token-not-real'
SSID='clawbox test net'
PASSPHRASE='boot test "pass" #1'
WORKDIR=$(mktemp -d)
qemu=
cleanup() {
  if [ -n "$qemu" ]; then kill "$qemu" 2>/dev/null || true; fi
  rm -rf "$WORKDIR"
}
trap cleanup EXIT

cp --sparse=always "$IMG" "$TEST_IMG"
# Partition N's start and size in 512-byte sectors.
part() { sfdisk --dump "$TEST_IMG" | sed -n "s|^$TEST_IMG$1 : start= *\([0-9]*\), size= *\([0-9]*\).*|\1 \2|p"; }
read -r boot_start _ < <(part 1)
read -r data_start data_size < <(part 3)
export MTOOLS_SKIP_CHECK=1
FAT="$TEST_IMG@@$((boot_start * 512))"
# As a Windows editor saves it (CRLF line ends).
printf 'country=DE\r\nssid=%s\r\npassphrase=%s\r\n' "$SSID" "$PASSPHRASE" > "$WORKDIR/wifi.conf"
printf '%s\n' "$TOKEN" > "$WORKDIR/telegram.token"
# What the running box sees. It prints names, modes, owners and the config's non-secret lines.
cat > "$WORKDIR/report.sh" <<'EOS'
r() { sed 's/^/BOOT-REPORT /'; }
echo "BOOT-REPORT begin"
echo "BOOT-REPORT clawbox uid:gid $(id -u clawbox):$(id -g clawbox)"
systemctl show -p ActiveState -p SubState -p StatusText -p NRestarts -p ExecMainStatus clawbox.service | r
clawbox status 2>&1 | r
systemctl show -p Result -p ExecMainStatus clawbox-firstboot.service | sed 's/^/firstboot /' | r
for f in wifi.conf clawbox/telegram.token clawbox; do
  if [ -e "/boot/firmware/$f" ]; then echo "card still has $f"; else echo "card no longer has $f"; fi
done | r
stat -c 'file %n %a %U:%G' /etc/clawbox/telegram.token \
  /var/lib/clawbox-data/wpa_supplicant/wpa_supplicant-wlan0.conf 2>&1 | r
echo "symlink /etc/wpa_supplicant/wpa_supplicant-wlan0.conf -> $(readlink /etc/wpa_supplicant/wpa_supplicant-wlan0.conf)" | r
grep -E '^(country|ctrl_interface)=|^\s*(ssid|key_mgmt)=' /etc/wpa_supplicant/wpa_supplicant-wlan0.conf | sed 's/^\s*/wpa /' | r
grep -cE '^\s*psk="' /etc/wpa_supplicant/wpa_supplicant-wlan0.conf | sed 's/^/wpa psk lines: /' | r
echo "wpa_supplicant@wlan0 is-enabled: $(systemctl is-enabled wpa_supplicant@wlan0.service)" | r
systemctl show -p ActiveState -p SubState wpa_supplicant@wlan0.service | sed 's/^/wpa_supplicant@wlan0 /' | r
dpkg-query -W -f='package ${Package} ${Version}\n' firmware-brcm80211 wpasupplicant wireless-regdb | r
ls /usr/lib/firmware/brcm | grep -E '^brcmfmac434(30|55|56)-sdio\.(bin|clm_blob)$|raspberrypi' | sed 's/^/firmware /' | r
sed 's/^/card report: /' /boot/firmware/clawbox-firstboot.txt | r
# Wi-Fi over two simulated radios (mac80211_hwsim, loaded from the kernel command line for this
# test only: wlan0 and wlan1). An access point on wlan1 with the test network and passphrase
# (wpa_supplicant in AP mode), and networkd serving DHCP there; the box's own wpa_supplicant@wlan0,
# with the config clawbox-firstboot wrote, must associate (WPA2-PSK) and networkd get an address.
if [ -e /sys/class/net/wlan1 ]; then
  mkdir -p /run/systemd/network
  printf '[Match]\nName=wlan1\n[Network]\nAddress=192.168.77.1/24\nDHCPServer=yes\n' \
    > /run/systemd/network/10-boot-test-ap.network
  networkctl reload
  wpa_supplicant -B -i wlan1 -c /boot/firmware/boot-test-ap.conf -P /run/boot-test-ap.pid | r
  state= addr=
  for _ in $(seq 1 120); do
    state=$(wpa_cli -p /run/wpa_supplicant -i wlan0 status 2>/dev/null | sed -n 's/^wpa_state=//p')
    addr=$(ip -4 -o addr show dev wlan0 | awk '{ print $4 }')
    [ "$state" = COMPLETED ] && [ -n "$addr" ] && break
    sleep 1
  done
  echo "wifi wpa_state=$state address=${addr:-none}" | r
  wpa_cli -p /run/wpa_supplicant -i wlan0 status 2>/dev/null | grep -E '^(ssid|key_mgmt|pairwise_cipher)=' \
    | sed 's/^/wifi /' | r
  systemctl show -p ActiveState -p SubState wpa_supplicant@wlan0.service | sed 's/^/wpa_supplicant@wlan0 /' | r
else
  echo "wifi no simulated radio (mac80211_hwsim)" | r
fi
echo "BOOT-REPORT end"
EOS
# The access point's side of the simulated Wi-Fi (see the report): same network, same passphrase.
printf 'ctrl_interface=DIR=/run/boot-test-ap\nnetwork={\n\tssid="%s"\n\tmode=2\n\tfrequency=2412\n\tkey_mgmt=WPA-PSK\n\tproto=RSN\n\tpairwise=CCMP\n\tgroup=CCMP\n\tpsk="%s"\n}\n' \
  "$SSID" "$PASSPHRASE" > "$WORKDIR/ap.conf"
mcopy -i "$FAT" "$WORKDIR/wifi.conf" ::wifi.conf
mmd -i "$FAT" ::clawbox
mcopy -i "$FAT" "$WORKDIR/telegram.token" ::clawbox/telegram.token
mcopy -i "$FAT" "$WORKDIR/report.sh" ::boot-test-report.sh
mcopy -i "$FAT" "$WORKDIR/ap.conf" ::boot-test-ap.conf

# The report unit, passed as the credential systemd.extra-unit.* (systemd-debug-generator writes it
# out at boot) and pulled in with systemd.wants=. After=clawbox.service: it runs once clawbox's start
# job finished, i.e. after READY=1 (or after the start failed, which it then shows), and so after
# clawbox-firstboot (Before=clawbox.service).
report_unit='[Unit]
Description=clawbox boot test report
After=clawbox.service
[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh /boot/firmware/boot-test-report.sh
'
report_b64=$(printf '%s' "$report_unit" | base64 -w0)

LOG=dist/boot-test.log
: > "$LOG"
# restrict=on: the guest gets DHCP from qemu's user network but can reach nothing outside it.
# forward_to_console: clawbox's own log lines (journal) appear on the serial console too.
# systemd.firstboot=0: as in the image's cmdline.txt (empty machine-id on a read-only root).
# No -snapshot: the copy is inspected afterwards. romfile=: no PXE boot ROM (the kernel is given
# directly), so the test does not need the ipxe-qemu package.
qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 512 -nographic -no-reboot \
  -kernel dist/clawbox-pi.vmlinuz -initrd dist/clawbox-pi.initrd \
  -append "root=LABEL=CLAWROOT ro rootwait console=ttyAMA0 panic=-1 net.ifnames=0 modules-load=mac80211_hwsim systemd.firstboot=0 systemd.journald.forward_to_console=1 systemd.set_credential_binary=systemd.extra-unit.clawbox-boot-report.service:$report_b64 systemd.wants=clawbox-boot-report.service" \
  -drive if=none,id=sd,file="$TEST_IMG",format=raw -device virtio-blk-pci,drive=sd \
  -netdev user,id=net0,restrict=on -device virtio-net-pci,netdev=net0,romfile= \
  </dev/null >"$LOG" 2>&1 &
qemu=$!

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
# A power cut: no shutdown, nothing flushed by the guest after this point.
kill -9 "$qemu" 2>/dev/null || true
wait "$qemu" 2>/dev/null || true
qemu=
echo "--- serial console excerpt (full log: $LOG)"
grep -aE 'Linux version|clawbox|CLAW|BOOT-REPORT|Kernel panic|Failed|wpa_supplicant\[|wlan0' "$LOG" \
  | tail -n 100 || true
if [ "$result" = 0 ]; then
  echo "boot-test: clawbox.service started (READY=1) ${ready_at} s after launch"
else
  echo "boot-test: clawbox.service did not start, after ${elapsed} s (see $LOG)" >&2
fi

# --- Checks ---------------------------------------------------------------------------------------
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then echo "boot-test: ok: $what"; else echo "boot-test: FAILED: $what" >&2; result=1; fi
}
on_console() { grep -aqF -- "$1" "$LOG"; }
not_on_console() { ! on_console "$1"; }
check "the token never on the console" not_on_console "$TOKEN"
check "the passphrase never on the console" not_on_console "$PASSPHRASE"
check "clawbox-firstboot took wifi.conf" on_console "took wifi.conf: network '$SSID', country DE"
check "clawbox-firstboot took the token" \
  on_console "took clawbox/telegram.token: now /etc/clawbox/telegram.token (0600, owner clawbox)"
check "the box: token 0600 clawbox" on_console "BOOT-REPORT file /etc/clawbox/telegram.token 600 clawbox:clawbox"
check "the box: wpa_supplicant config 0600 root on the data partition" \
  on_console "BOOT-REPORT file /var/lib/clawbox-data/wpa_supplicant/wpa_supplicant-wlan0.conf 600 root:root"
check "the box: wifi.conf gone from /boot/firmware" on_console "BOOT-REPORT card no longer has wifi.conf"
check "the box: clawbox/ gone from /boot/firmware" on_console "BOOT-REPORT card no longer has clawbox"
check "wpa_supplicant@wlan0 enabled" on_console "BOOT-REPORT wpa_supplicant@wlan0 is-enabled: enabled"
check "the config has the country" on_console "BOOT-REPORT wpa country=DE"
check "the config has the network (hex)" \
  on_console "BOOT-REPORT wpa ssid=$(printf '%s' "$SSID" | od -An -v -tx1 | tr -d ' \n')"
check "the config has the passphrase line" on_console "BOOT-REPORT wpa psk lines: 1"
check "firmware-brcm80211 installed" on_console "BOOT-REPORT package firmware-brcm80211 "
# What mainline brcmfmac loads on each board: the chip's firmware and the board's NVRAM file.
for f in brcmfmac43430-sdio.bin brcmfmac43430-sdio.raspberrypi,model-zero-2-w.txt \
         brcmfmac43430-sdio.raspberrypi,3-model-b.txt brcmfmac43455-sdio.bin \
         brcmfmac43455-sdio.raspberrypi,3-model-b-plus.txt brcmfmac43455-sdio.raspberrypi,4-model-b.txt \
         brcmfmac43456-sdio.bin; do
  check "Wi-Fi firmware file $f" on_console "BOOT-REPORT firmware $f"
done
check "wpasupplicant installed" on_console "BOOT-REPORT package wpasupplicant "
check "Wi-Fi (simulated radio): associated with WPA2-PSK and got a DHCP address" \
  on_console "BOOT-REPORT wifi wpa_state=COMPLETED address=192.168.77."
check "Wi-Fi (simulated radio): the test network" on_console "BOOT-REPORT wifi ssid=$SSID"

# The image after the cut. The FAT partition: the files are gone, the report is there.
fat_has() { mdir -b -i "$FAT" "::/$1" >/dev/null 2>&1; }
fat_lacks() { ! fat_has "$1"; }
check "image: wifi.conf gone from the FAT partition" fat_lacks wifi.conf
check "image: clawbox/ gone from the FAT partition" fat_lacks clawbox
check "image: clawbox-firstboot.txt on the FAT partition" fat_has clawbox-firstboot.txt
# The data partition, its journal replayed as the next mount would (e2fsck, on a copy of it).
dd if="$TEST_IMG" of="$WORKDIR/data.ext4" bs=512 skip="$data_start" count="$data_size" status=none
if ! e2fsck -fy "$WORKDIR/data.ext4" >"$WORKDIR/e2fsck.log" 2>&1; then
  # 1: the file system was changed (the journal replayed); more is damage.
  [ $? -le 1 ] || { cat "$WORKDIR/e2fsck.log"; result=1; }
fi
export DEBUGFS_PAGER=__none__
data_cat() { debugfs -R "cat $1" "$WORKDIR/data.ext4" 2>/dev/null; }
# "mode uid gid" of a file on the data partition.
owner_mode() {
  debugfs -R "stat $1" "$WORKDIR/data.ext4" 2>/dev/null \
    | sed -n 's/.*Mode: *\([0-7]*\).*/\1/p; s/^User: *\([0-9]*\) *Group: *\([0-9]*\).*/\1 \2/p' | tr '\n' ' '
}
clawbox_ids=$(sed -n 's/.*BOOT-REPORT clawbox uid:gid \([0-9][0-9]*\):\([0-9][0-9]*\).*/\1 \2/p' "$LOG" | head -n 1)
check "image: /etc/clawbox/telegram.token is 0600 clawbox (uid gid ${clawbox_ids:-?})" \
  test "$(owner_mode /etc/telegram.token)" = "0600 ${clawbox_ids:-?} "
check "image: the token's content" test "$(data_cat /etc/telegram.token)" = "$TOKEN"
check "image: the wpa_supplicant config is 0600 root" \
  test "$(owner_mode /wpa_supplicant/wpa_supplicant-wlan0.conf)" = "0600 0 0 "
wpa_has_psk() { data_cat /wpa_supplicant/wpa_supplicant-wlan0.conf | grep -qxF "$(printf '\tpsk="%s"' "$PASSPHRASE")"; }
check "image: the wpa_supplicant config's passphrase, quotes and '#' kept" wpa_has_psk
no_temp() { ! debugfs -R 'ls /etc' "$WORKDIR/data.ext4" 2>/dev/null | grep -q firstboot-tmp; }
check "image: no temporary file left" no_temp

if [ "$result" = 0 ]; then
  echo "boot-test: PASSED"
else
  echo "boot-test: FAILED (see $LOG)" >&2
fi
exit "$result"
