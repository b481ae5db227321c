#!/usr/bin/env bash
# Builds a flashable Raspberry Pi SD image (Pi 3/4/400/CM4/Zero 2 W, 64-bit) with clawbox installed
# and enabled: dist/clawbox-pi.img (+ .xz with --xz). Debian arm64 packages via mmdebstrap, no loop
# mounts and no system-wide binfmt (both are missing in containers): arm64 maintainer scripts run
# under qemu-aarch64-static, registered in a private user namespace's binfmt_misc.
#
# Usage: image/build.sh [--suite trixie] [--xz]    (as root; not part of CI; see image/README.md)
#
# Layout: p1 FAT32 "CLAWBOOT" (/boot/firmware: Pi firmware, dtbs, kernel, initrd, config.txt,
# cmdline.txt), p2 ext4 "CLAWROOT" (/, mounted read-only), p3 ext4 "CLAWDATA" (/var/lib/clawbox,
# the only persistent writes: clawbox's redb store). Logs, /tmp and /var/lib/systemd live in RAM.
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
[ "$(id -u)" = 0 ] || { log "run as root (needs mknod-free but root-owned files)"; exit 1; }

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
# The binary to install: CLAWBOX_BIN, else dist/clawbox-aarch64 (built if missing). It is read by
# the customize hook, at the end of the bootstrap.
if [ -z "${CLAWBOX_BIN:-}" ]; then
  [ -x dist/clawbox-aarch64 ] || image/build-binaries.sh aarch64
  CLAWBOX_BIN="$PWD/dist/clawbox-aarch64"
fi

# --- Root filesystem ------------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
ROOTFS="$WORK/rootfs"
cp systemd/clawbox.service image/rootfs-setup.sh image/rootfs-customize.sh "$WORK/"

# Packages: the kernel, Pi firmware (non-free-firmware), systemd as init with networkd (DHCP on
# Ethernet), resolved (a resolv.conf that lives in /run, so the root can stay read-only) and
# timesyncd (the Pi has no RTC, and TLS needs the right time). No SSH server (see README).
PACKAGES=systemd-sysv,udev,kmod,initramfs-tools,linux-image-arm64,raspi-firmware,systemd-resolved,systemd-timesyncd,ca-certificates,iproute2,e2fsprogs,dosfstools
# Documentation, man pages and locales are never read on the box.
DPKG_EXCLUDES=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
)

start=$(date +%s)
log "mmdebstrap $SUITE arm64 into $ROOTFS (arm64 scripts under qemu-user)"
# In a new user namespace with its own binfmt_misc: register qemu-aarch64 with the F flag (the
# interpreter is opened now, so the chroot needs no copy of it), then bootstrap. Host uids/gids
# 0-65535 are mapped 1:1 (written from outside: files get their real owners, e.g. group shadow);
# setgroups is denied, as the kernel requires for that write.
ready="$WORK/.userns-mapped"
rm -f "$ready"
unshare --user --mount --pid --fork --mount-proc bash -euo pipefail -c '
  while [ ! -e "$0" ]; do sleep 0.1; done
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  printf "%s:/usr/bin/qemu-aarch64-static:F" "$(cut -d: -f1-6 /usr/lib/binfmt.d/qemu-aarch64.conf)" \
    > /proc/sys/fs/binfmt_misc/register
  exec mmdebstrap "$@"
' "$ready" --mode=root --arch=arm64 --variant=minbase \
  --components=main,non-free-firmware \
  --include="$PACKAGES" \
  "${DPKG_EXCLUDES[@]}" \
  --setup-hook="sh $WORK/rootfs-setup.sh \"\$1\"" \
  --customize-hook="sh $WORK/rootfs-customize.sh \"\$1\" $WORK $CLAWBOX_BIN" \
  "$SUITE" "$ROOTFS" &
ns=$!
while [ "$(readlink /proc/$ns/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do sleep 0.1; done
echo "0 0 65536" > /proc/$ns/uid_map
echo deny > /proc/$ns/setgroups
echo "0 0 65536" > /proc/$ns/gid_map
touch "$ready"
wait "$ns"
log "rootfs done in $(( $(date +%s) - start )) s ($(du -sm "$ROOTFS" | cut -f1) MiB)"

# --- Partitions and filesystems (no loop devices) -------------------------------------------------
start=$(date +%s)
BOOT_START=8 # MiB; 4 MiB alignment suits SD erase blocks
ROOT_START=$((BOOT_START + BOOT_MIB))
DATA_START=$((ROOT_START + ROOT_MIB))
TOTAL_MIB=$((DATA_START + DATA_MIB))
rm -f "$OUT"
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
# The root keeps an empty mount point; the boot files live only on the FAT partition.
find "$ROOTFS/boot/firmware" -mindepth 1 -delete

# Root and data: ext4 populated from directories (-d), no mounting.
ROOTIMG="$WORK/root.ext4"
DATAIMG="$WORK/data.ext4"
mkdir -p "$WORK/data"
rm -f "$ROOTIMG" "$DATAIMG"
mke2fs -q -t ext4 -L CLAWROOT -d "$ROOTFS" "$ROOTIMG" "${ROOT_MIB}M"
mke2fs -q -t ext4 -L CLAWDATA -d "$WORK/data" "$DATAIMG" "${DATA_MIB}M"

dd if="$BOOTFS" of="$OUT" bs=1M seek="$BOOT_START" conv=notrunc status=none
dd if="$ROOTIMG" of="$OUT" bs=1M seek="$ROOT_START" conv=notrunc status=none
dd if="$DATAIMG" of="$OUT" bs=1M seek="$DATA_START" conv=notrunc status=none

# The qemu boot test boots the image's own kernel and initrd directly (virt has no Pi firmware).
cp "$ROOTFS"/boot/vmlinuz-* dist/clawbox-pi.vmlinuz
cp "$ROOTFS"/boot/initrd.img-* dist/clawbox-pi.initrd
log "image assembled in $(( $(date +%s) - start )) s: $OUT ($(stat -c %s "$OUT") bytes)"
if [ "$XZ" = 1 ]; then
  xz -T0 -6 -kf "$OUT"
  log "$OUT.xz: $(stat -c %s "$OUT.xz") bytes"
fi
log "flash: xzcat $OUT.xz | sudo dd of=/dev/sdX bs=4M conv=fsync   (or dd the .img)"
