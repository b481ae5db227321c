#!/usr/bin/env bash
# Builds a flashable Raspberry Pi SD image (Pi 3/4/400/CM4/Zero 2 W, 64-bit) with clawbox installed
# from its .deb and enabled: dist/clawbox-pi.img (+ .xz with --xz). Debian arm64 packages via
# mmdebstrap, no loop mounts and no system-wide binfmt (both are missing in containers): arm64
# maintainer scripts run under qemu-aarch64-static, registered in a private user namespace's
# binfmt_misc. Never mounts anything on the host and never writes outside dist/ and $WORK.
#
# Usage: image/build.sh [--suite trixie] [--xz]    (as root; not part of CI; see image/README.md)
#
# Two stages, the first cached: (1) the base Debian root (mmdebstrap; ~all of the time) is kept in
# $WORK/base-<key>, keyed by everything that goes into it, and the downloaded .debs in $WORK/debs;
# (2) a copy of it gets the clawbox .deb (dpkg -i, its postinst under emulation), the image
# settings (rootfs-customize.sh) and becomes the partitions. A new clawbox build redoes only (2).
#
# Layout: p1 FAT32 "CLAWBOOT" (/boot/firmware: Pi firmware, dtbs, kernel, initrd, config.txt,
# cmdline.txt), p2 ext4 "CLAWROOT" (/, mounted read-only), p3 ext4 "CLAWDATA" (clawbox's store and
# config, the only persistent writes). Logs, /tmp and /var/lib/systemd live in RAM.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=trixie
XZ=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE="$2"; shift 2 ;;
    --xz) XZ=1; shift ;;
    *) echo "usage: image/build.sh [--suite SUITE] [--xz]" >&2; exit 2 ;;
  esac
done

# Partition sizes (MiB). Boot: firmware + dtbs + one kernel/initrd pair is ~60 MiB; 256 leaves room
# for a kernel update. Root: the minimal system is ~500 MiB; 1024 leaves headroom. Data: clawbox's
# store is capped well below this by its own limits.
BOOT_MIB=256
ROOT_MIB=1024
DATA_MIB=256
OUT=dist/clawbox-pi.img
WORK="${CLAWBOX_IMAGE_WORK:-/var/tmp/clawbox-image}"

log() { echo "image/build.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (the root fs holds files of many owners)"; exit 1; }
t0=$(date +%s)

# --- Host tools -----------------------------------------------------------------------------------
need=()
for p in mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static mcopy:mtools mkfs.vfat:dosfstools \
         sfdisk:fdisk mke2fs:e2fsprogs xz:xz-utils arch-test:arch-test; do
  command -v "${p%%:*}" >/dev/null 2>&1 || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# in_arm_ns CMD...: runs CMD as root of a new user namespace (host uids/gids 0-65535 mapped 1:1, so
# files get their real owners, e.g. group shadow) whose own binfmt_misc runs arm64 ELF files with
# qemu-aarch64-static. The F flag opens the interpreter now, so no chroot needs a copy of it.
in_arm_ns() {
  local ready="$WORK/.userns-mapped.$$"
  rm -f "$ready"
  unshare --user --mount --pid --fork --mount-proc bash -euo pipefail -c '
    ready=$1; shift
    while [ ! -e "$ready" ]; do sleep 0.1; done
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    printf "%s:/usr/bin/qemu-aarch64-static:F" "$(cut -d: -f1-6 /usr/lib/binfmt.d/qemu-aarch64.conf)" \
      > /proc/sys/fs/binfmt_misc/register
    exec "$@"
  ' in_arm_ns "$ready" "$@" &
  local ns=$!
  while [ "$(readlink /proc/$ns/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do sleep 0.1; done
  # setgroups must be denied before an unprivileged-style gid map; uid/gid maps written from outside.
  echo "0 0 65536" > /proc/$ns/uid_map
  echo deny > /proc/$ns/setgroups
  echo "0 0 65536" > /proc/$ns/gid_map
  touch "$ready"
  local rc=0
  wait "$ns" || rc=$?
  rm -f "$ready"
  return "$rc"
}

# --- Stage 1: the base root filesystem (cached) ---------------------------------------------------
# Packages: the kernel, Pi firmware (non-free-firmware), systemd as init with networkd (DHCP on
# Ethernet and Wi-Fi), resolved (a resolv.conf that lives in /run, so the root can stay read-only),
# timesyncd (the Pi has no RTC, and TLS needs the right time), adduser (the clawbox .deb's
# postinst). Wi-Fi: wpasupplicant (WPA2 association, run per interface as wpa_supplicant@wlan0),
# firmware-brcm80211 (non-free-firmware: the Broadcom/Cypress SDIO chips' firmware and the Pi
# boards' NVRAM files; without it brcmfmac creates no wlan0) and wireless-regdb (the regulatory
# database the kernel loads for the country= of wifi.conf). No SSH server (see README).
PACKAGES=systemd-sysv,udev,kmod,initramfs-tools,linux-image-arm64,raspi-firmware,systemd-resolved,systemd-timesyncd,ca-certificates,iproute2,e2fsprogs,dosfstools,adduser,wpasupplicant,firmware-brcm80211,wireless-regdb
# Never read on the box: documentation, man pages, locales. And udev's hardware name databases
# (PCI/USB/OUI/ACPI/Bluetooth vendor and model names, 9.5 of its ~10 MB of hwdb sources): they only
# name devices for humans (lsusb, ID_MODEL_FROM_DATABASE), and compiling them is what made udev's
# postinst (`systemd-hwdb update`) run for half an hour under emulation. The functional hwdb
# entries (keyboard maps, sensors, autosuspend quirks, net names) stay and are compiled.
DPKG_EXCLUDES=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/20-OUI.hwdb'
  --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/20-pci-vendor-model.hwdb'
  --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/20-usb-vendor-model.hwdb'
  --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/20-acpi-vendor.hwdb'
  --dpkgopt='path-exclude=/usr/lib/udev/hwdb.d/20-bluetooth-vendor-product.hwdb'
)
# The cache key: everything that decides the base root's content.
key=$( { echo "$SUITE $PACKAGES ${DPKG_EXCLUDES[*]}"; cat image/rootfs-setup.sh; } | sha256sum | cut -c1-16)
BASE="$WORK/base-$key"
DEBS="$WORK/debs"
mkdir -p "$WORK" "$DEBS"
if [ -f "$BASE.done" ]; then
  log "base root: cached $BASE"
else
  # Older bases are of no further use.
  rm -rf "$WORK"/base-*
  start=$(date +%s)
  log "mmdebstrap $SUITE arm64 into $BASE (arm64 scripts under qemu-user)"
  cp image/rootfs-setup.sh "$WORK/"
  # The downloaded .debs are kept between runs (sync-in before, sync-out after; essential/unlink
  # skipped so the essential set is kept too) and then removed from the root.
  in_arm_ns mmdebstrap --mode=root --arch=arm64 --variant=minbase \
    --components=main,non-free-firmware \
    --include="$PACKAGES" \
    "${DPKG_EXCLUDES[@]}" \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook="sh $WORK/rootfs-setup.sh \"\$1\"" \
    --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives" \
    --setup-hook="sync-in $DEBS /var/cache/apt/archives" \
    --customize-hook="sync-out /var/cache/apt/archives $DEBS" \
    --customize-hook="rm -f \"\$1\"/var/cache/apt/archives/*.deb" \
    "$SUITE" "$BASE"
  touch "$BASE.done"
  log "base root built in $(( $(date +%s) - start )) s ($(du -sm "$BASE" | cut -f1) MiB)"
fi

# --- Stage 2: clawbox and the image settings on a copy --------------------------------------------
# The clawbox .deb: CLAWBOX_DEB, else packed now by build-deb.sh (seconds once cargo-deb is there;
# it builds the aarch64 binary first only if there is none).
if [ -z "${CLAWBOX_DEB:-}" ]; then
  image/build-deb.sh
  CLAWBOX_DEB=$(ls -t dist/clawbox_*_arm64.deb | head -n 1)
fi
CLAWBOX_DEB=$(realpath "$CLAWBOX_DEB")
log "clawbox package: $CLAWBOX_DEB"

start=$(date +%s)
ROOTFS="$WORK/rootfs"
rm -rf "$ROOTFS"
cp -a "$BASE" "$ROOTFS"
cp image/rootfs-customize.sh systemd/journald-clawbox.conf "$WORK/"
mkdir -p "$ROOTFS/tmp/clawbox-deb"
cp "$CLAWBOX_DEB" "$ROOTFS/tmp/clawbox-deb/"
# The .deb is installed the way a user installs it: dpkg in the target system, postinst included
# (system user, i2c group, units enabled); its output is kept as evidence in dist/.
in_arm_ns chroot "$ROOTFS" sh -c 'dpkg -i /tmp/clawbox-deb/*.deb && dpkg -s clawbox | sed -n "s/^\(Status\|Version\|Architecture\):/dpkg: &/p"' \
  2>&1 | tee dist/clawbox-pi.deb-install.log
rm -rf "$ROOTFS/tmp/clawbox-deb"
in_arm_ns sh "$WORK/rootfs-customize.sh" "$ROOTFS" "$WORK/data" "$WORK/journald-clawbox.conf"
log "clawbox installed and image settings applied in $(( $(date +%s) - start )) s"

# --- Partitions and filesystems (no loop devices) -------------------------------------------------
start=$(date +%s)
BOOT_START=8 # MiB; 4 MiB alignment suits SD erase blocks
ROOT_START=$((BOOT_START + BOOT_MIB))
DATA_START=$((ROOT_START + ROOT_MIB))
TOTAL_MIB=$((DATA_START + DATA_MIB))
rm -f "$OUT"
mkdir -p dist
truncate -s "${TOTAL_MIB}M" "$OUT"
sfdisk --quiet "$OUT" <<EOT
label: dos
${BOOT_START}MiB ${BOOT_MIB}MiB c *
${ROOT_START}MiB ${ROOT_MIB}MiB 83
${DATA_START}MiB ${DATA_MIB}MiB 83
EOT

# Boot: FAT32 built as a file, filled with mcopy.
BOOTFS="$WORK/boot.vfat"
rm -f "$BOOTFS"
mkfs.vfat -F 32 -n CLAWBOOT -C "$BOOTFS" $((BOOT_MIB * 1024)) >/dev/null
mcopy -i "$BOOTFS" -s "$ROOTFS"/boot/firmware/* ::/
# The qemu boot test boots the image's own kernel and initrd directly (virt has no Pi firmware).
cp "$ROOTFS/boot/firmware/vmlinuz" dist/clawbox-pi.vmlinuz
cp "$ROOTFS/boot/firmware/initrd.img" dist/clawbox-pi.initrd
# The root keeps an empty mount point; the boot files live only on the FAT partition.
find "$ROOTFS/boot/firmware" -mindepth 1 -delete

# Root and data: ext4 populated from directories (-d), no mounting.
ROOTIMG="$WORK/root.ext4"
DATAIMG="$WORK/data.ext4"
rm -f "$ROOTIMG" "$DATAIMG"
mke2fs -q -t ext4 -L CLAWROOT -d "$ROOTFS" "$ROOTIMG" "${ROOT_MIB}M"
mke2fs -q -t ext4 -L CLAWDATA -d "$WORK/data" "$DATAIMG" "${DATA_MIB}M"

dd if="$BOOTFS" of="$OUT" bs=1M seek="$BOOT_START" conv=notrunc status=none
dd if="$ROOTIMG" of="$OUT" bs=1M seek="$ROOT_START" conv=notrunc status=none
dd if="$DATAIMG" of="$OUT" bs=1M seek="$DATA_START" conv=notrunc status=none
rm -f "$BOOTFS" "$ROOTIMG" "$DATAIMG"
log "image assembled in $(( $(date +%s) - start )) s: $OUT ($(stat -c %s "$OUT") bytes; root uses $(du -sm "$ROOTFS" | cut -f1) MiB)"
if [ "$XZ" = 1 ]; then
  xz -T0 -6 -kf "$OUT"
  log "$OUT.xz: $(stat -c %s "$OUT.xz") bytes"
fi
log "done in $(( $(date +%s) - t0 )) s. Flash: xzcat $OUT.xz | sudo dd of=/dev/sdX bs=4M conv=fsync   (or dd the .img)"
