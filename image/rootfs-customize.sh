#!/bin/sh
# The SD image's settings, applied by image/build.sh to the root filesystem ($1) after the clawbox
# .deb is installed in it, inside the build's user namespace (arm64 binaries run under qemu-user, so
# `chroot "$R" …` works). Fills $2 with the data partition's initial content; $3 is
# systemd/journald-clawbox.conf. Makes the root
# read-mostly, enables the network, and writes the Pi boot files. Never touches the host outside
# $1 and $2.
set -eu
R="$1"
D="$2"

# --- clawbox: installed by the .deb (binary, units, user, postinst enabled the units) -------------
chroot "$R" dpkg -s clawbox >/dev/null
chroot "$R" getent passwd clawbox >/dev/null

# The root is read-only at run time, so clawbox's config and store live on the data partition
# (LABEL=CLAWDATA at /var/lib/clawbox-data) and are bind-mounted where the unit expects them:
#   state/ -> /var/lib/clawbox (StateDirectory=, 0700 clawbox), etc/ -> /etc/clawbox (0755 root,
#   written by clawbox-firstboot.service from /boot/firmware/clawbox.toml and clawbox/*).
# Without a clawbox.toml clawbox runs on its embedded defaults (the echo agent).
uid=$(chroot "$R" id -u clawbox)
gid=$(chroot "$R" id -g clawbox)
rm -rf "$D"
install -d -m 0755 -o 0 -g 0 "$D" "$D/etc"
install -d -m 0700 -o "$uid" -g "$gid" "$D/state"
# The bind mount hides the .deb's example under /etc/clawbox: the data partition gets a copy.
cp "$R/etc/clawbox/clawbox.toml.example" "$D/etc/"
install -d -m 0755 "$R/var/lib/clawbox-data" "$R/var/lib/clawbox" "$R/etc/clawbox"
# The Wi-Fi config (it holds the passphrase) lives on the data partition too, 0700 root; the
# read-only root has a symlink where wpa_supplicant@wlan0 reads it. Written at first boot from the
# boot partition's wifi.conf (clawbox-firstboot, see the drop-in below).
install -d -m 0700 -o 0 -g 0 "$D/wpa_supplicant"
mkdir -p "$R/etc/wpa_supplicant"
ln -sfn /var/lib/clawbox-data/wpa_supplicant/wpa_supplicant-wlan0.conf \
  "$R/etc/wpa_supplicant/wpa_supplicant-wlan0.conf"

# --- Network, names, time ------------------------------------------------------------------------
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/50-wired.network" <<'EOT'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOT
# Wi-Fi (Pi 3/4/400/Zero 2 W; the name is wlan0 with net.ifnames=0): DHCP once wpa_supplicant has
# associated. A higher route metric than Ethernet's default (1024 for both otherwise), so a cable,
# when plugged in, carries the traffic.
cat > "$R/etc/systemd/network/60-wireless.network" <<'EOT'
[Match]
Name=wlan0

[Network]
DHCP=yes

[DHCPv4]
RouteMetric=2048

[IPv6AcceptRA]
RouteMetric=2048
EOT
# network-online.target (clawbox.service waits for it) as soon as ANY link is up: by default
# systemd-networkd-wait-online waits for every managed link, so a box on Wi-Fi with its Ethernet
# port empty (or the other way round) would start clawbox only after its 2 minute timeout.
mkdir -p "$R/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat > "$R/etc/systemd/system/systemd-networkd-wait-online.service.d/clawbox.conf" <<'EOT'
[Service]
ExecStart=
ExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any
EOT
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
echo clawbox > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tclawbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
chroot "$R" systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
chroot "$R" systemctl is-enabled clawbox.service clawbox-firstboot.service

# --- Wi-Fi from the boot partition -----------------------------------------------------------------
# clawbox-firstboot also takes wifi.conf on this image (the .deb alone leaves networks alone): it
# writes the wpa_supplicant config through the symlink above, onto the data partition.
mkdir -p "$R/etc/systemd/system/clawbox-firstboot.service.d"
cat > "$R/etc/systemd/system/clawbox-firstboot.service.d/wifi.conf" <<'EOT'
# clawbox image: wifi.conf on the boot partition becomes wpa_supplicant@wlan0's config.
[Unit]
ConditionPathExists=|/boot/firmware/wifi.conf
RequiresMountsFor=/var/lib/clawbox-data

[Service]
Environment=CLAWBOX_FIRSTBOOT_WIFI=/etc/wpa_supplicant/wpa_supplicant-wlan0.conf
ReadWritePaths=/var/lib/clawbox-data/wpa_supplicant
EOT
# wpa_supplicant@wlan0 is enabled where wlan0 appears (wanted by its device unit, not by
# multi-user.target: a board without Wi-Fi, a CM4 Lite or `dtoverlay=disable-wifi`, would otherwise
# hold the boot 90 s for a device that never comes and then fail the unit). It runs once the config
# exists: after clawbox-firstboot wrote it (on the boot that takes wifi.conf, and with a new
# wifi.conf on the card, the new one), with the data partition mounted. Without a config (a box on
# Ethernet) it is skipped, not failed.
mkdir -p "$R/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
ln -sfn /usr/lib/systemd/system/wpa_supplicant@.service \
  "$R/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"
# The package also enables its D-Bus service (wpa_supplicant.service, for NetworkManager): here
# nothing talks D-Bus to it, and it would be one more daemon in 512 MB.
chroot "$R" systemctl disable wpa_supplicant.service
mkdir -p "$R/etc/systemd/system/wpa_supplicant@wlan0.service.d"
cat > "$R/etc/systemd/system/wpa_supplicant@wlan0.service.d/clawbox.conf" <<'EOT'
# clawbox image: the config is written at first boot from the boot partition's wifi.conf.
[Unit]
ConditionPathExists=/etc/wpa_supplicant/wpa_supplicant-wlan0.conf
RequiresMountsFor=/var/lib/clawbox-data
After=clawbox-firstboot.service
EOT
chroot "$R" systemctl is-enabled wpa_supplicant@wlan0.service
# SSH is off: no server is installed (see image/README.md).

# --- Read-mostly root ------------------------------------------------------------------------------
# / is mounted read-only; the only persistent writes go to the data partition (clawbox's store,
# config and secrets, the Wi-Fi config). /boot/firmware is writable only so that
# clawbox-firstboot.service can delete the config, the secret files and wifi.conf after installing
# them. Logs stay in RAM (journald volatile), like /tmp, /var/tmp and systemd's own state
# (timesyncd's clock file, random seed): lost on reboot, never wearing the card.
cat > "$R/etc/fstab" <<'EOT'
# <fs>                        <mount point>          <type> <options>                                      <dump> <pass>
LABEL=CLAWROOT                /                      ext4   ro,noatime,errors=remount-ro                   0 1
LABEL=CLAWBOOT                /boot/firmware         vfat   rw,noatime,umask=0077,nofail                   0 2
LABEL=CLAWDATA                /var/lib/clawbox-data  ext4   rw,noatime,nosuid,nodev,noexec                 0 2
/var/lib/clawbox-data/state   /var/lib/clawbox       none   bind,x-systemd.requires-mounts-for=/var/lib/clawbox-data 0 0
/var/lib/clawbox-data/etc     /etc/clawbox           none   bind,x-systemd.requires-mounts-for=/var/lib/clawbox-data 0 0
tmpfs                         /tmp                   tmpfs  nosuid,nodev,mode=1777,size=64M                0 0
tmpfs                         /var/tmp               tmpfs  nosuid,nodev,mode=1777,size=16M                0 0
tmpfs                         /var/log               tmpfs  nosuid,nodev,noexec,mode=0755,size=16M         0 0
tmpfs                         /var/lib/systemd       tmpfs  nosuid,nodev,noexec,mode=0755,size=8M          0 0
EOT
# The journald settings the .deb ships as an example (logs in RAM, capped, rate limited), made
# active; $3 is the repository's copy (the image unpacks no /usr/share/doc).
mkdir -p "$R/etc/systemd/journald.conf.d"
cp "$3" "$R/etc/systemd/journald.conf.d/clawbox.conf"
# An empty machine-id on a read-only root: systemd uses a transient one each boot.
: > "$R/etc/machine-id"

# --- Pi boot partition ------------------------------------------------------------------------------
# raspi-firmware's kernel hooks normally fill /boot/firmware; copy again so the result does not
# depend on whether they ran inside the chroot.
B="$R/boot/firmware"
mkdir -p "$B"
kver=$(basename "$(ls -d "$R"/usr/lib/modules/* | sort -V | tail -n 1)")
cp -r "$R"/usr/lib/raspi-firmware/* "$B/"
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
# systemd.firstboot=0: the machine-id is empty on every boot (read-only root), which systemd treats
# as a first boot; nobody is at the console to answer systemd-firstboot's questions.
echo "console=tty0 console=ttyS1,115200 root=LABEL=CLAWROOT ro rootwait fsck.repair=yes net.ifnames=0 systemd.firstboot=0" \
  > "$B/cmdline.txt"
