#!/bin/sh
# mmdebstrap --customize-hook (runs after all packages are installed; $1 = the new root, $2 = the
# work dir holding clawbox-aarch64 and clawbox.service). Installs and enables clawbox, makes the root
# read-mostly, and writes the Pi boot files. Never touches the host outside $1.
set -eu
R="$1"
W="$2"

# --- clawbox: binary, unit, system user, config and state dirs ----------------------------------
install -m 0755 "$3" "$R/usr/bin/clawbox"
install -m 0644 "$W/clawbox.service" "$R/usr/lib/systemd/system/clawbox.service"
chroot "$R" useradd --system --user-group --home-dir /var/lib/clawbox --no-create-home \
  --shell /usr/sbin/nologin clawbox
# The root is read-only at run time: systemd cannot create these, so they exist already.
# /etc/clawbox holds clawbox.toml and token files (none: clawbox runs on its embedded defaults,
# the echo agent); /var/lib/clawbox is the mount point of the data partition.
install -d -m 0755 "$R/etc/clawbox"
install -d -m 0700 "$R/var/lib/clawbox"

# --- Network, names, time ------------------------------------------------------------------------
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/50-wired.network" <<'EOT'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOT
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
echo clawbox > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tclawbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
systemctl --root="$R" enable clawbox.service systemd-networkd.service systemd-resolved.service \
  systemd-timesyncd.service
# SSH is off: no server is installed (see image/README.md).

# --- Read-mostly root ------------------------------------------------------------------------------
# / is mounted read-only; the only persistent writes go to the data partition (clawbox's store).
# Logs stay in RAM (journald volatile), like /tmp, /var/tmp and systemd's own state (timesyncd's
# clock file, random seed): lost on reboot, never wearing the card.
cat > "$R/etc/fstab" <<'EOT'
# <fs>          <mount point>     <type> <options>                                  <dump> <pass>
LABEL=CLAWROOT  /                 ext4   ro,noatime,errors=remount-ro               0 1
LABEL=CLAWBOOT  /boot/firmware    vfat   ro,noatime,umask=0077,nofail               0 2
LABEL=CLAWDATA  /var/lib/clawbox  ext4   rw,noatime,nosuid,nodev,noexec             0 2
tmpfs           /tmp              tmpfs  nosuid,nodev,mode=1777,size=64M            0 0
tmpfs           /var/tmp          tmpfs  nosuid,nodev,mode=1777,size=16M            0 0
tmpfs           /var/log          tmpfs  nosuid,nodev,noexec,mode=0755,size=16M     0 0
tmpfs           /var/lib/systemd  tmpfs  nosuid,nodev,noexec,mode=0755,size=8M      0 0
EOT
mkdir -p "$R/etc/systemd/journald.conf.d"
cat > "$R/etc/systemd/journald.conf.d/clawbox.conf" <<'EOT'
[Journal]
Storage=volatile
RuntimeMaxUse=16M
EOT
# An empty machine-id on a read-only root: systemd uses a transient one each boot.
: > "$R/etc/machine-id"

# --- Pi boot partition ------------------------------------------------------------------------------
# raspi-firmware's kernel hooks normally fill /boot/firmware; copy again so the result does not
# depend on whether they ran inside the chroot.
B="$R/boot/firmware"
kver=$(basename "$(ls -d "$R"/usr/lib/modules/* | sort -V | tail -n 1)")
cp "$R"/usr/lib/raspi-firmware/* "$B/"
cp "$R"/usr/lib/linux-image-"$kver"/broadcom/bcm27*.dtb "$B/" 2>/dev/null || true
cp "$R/boot/vmlinuz-$kver" "$B/vmlinuz"
cp "$R/boot/initrd.img-$kver" "$B/initrd.img"
rm -f "$B"/vmlinuz-* "$B"/initrd.img-*
cat > "$B/config.txt" <<'EOT'
# clawbox image (Pi 3/4/400/CM4/Zero 2 W, 64-bit Debian kernel)
arm_64bit=1
upstream_kernel=1
kernel=vmlinuz
initramfs initrd.img followkernel
# Serial console on the GPIO header (ttyS1 with the mainline kernel).
enable_uart=1
disable_overscan=1
[pi4]
max_framebuffers=2
[all]
EOT
echo "console=tty0 console=ttyS1,115200 root=LABEL=CLAWROOT ro rootwait fsck.repair=yes net.ifnames=0" \
  > "$B/cmdline.txt"
