#!/bin/sh
# mmdebstrap --setup-hook (runs on the host before any package is installed; $1 = the new root).
# Limits the initramfs to the modules that mount the root on a Pi (SD/USB) and in the qemu boot
# test (virtio): with the default MODULES=most, mkinitramfs copies ~300 MB of modules under
# qemu-user emulation, twice, which dominated the build (~30 min).
set -eu
R="$1"
mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/usr/share/initramfs-tools/modules.d" "$R/boot/firmware"
cat > "$R/etc/initramfs-tools/conf.d/clawbox" <<'EOT'
# clawbox image: only the modules listed in /usr/share/initramfs-tools/modules.d/clawbox.
MODULES=list
COMPRESS=gzip
EOT
cat > "$R/usr/share/initramfs-tools/modules.d/clawbox" <<'EOT'
# Root filesystem
ext4
crc32c_generic
# Pi SD card: bcm2835 sdhost (Pi 3, Zero 2 W), sdhci-iproc (Pi 4 emmc2, Pi 3 Arasan)
mmc_block
bcm2835
sdhci_iproc
bcm2835_dma
clk_raspberrypi
raspberrypi_cpufreq
# Pi USB boot (USB SSD/stick): dwc2 (Pi 3), VL805 xHCI on PCIe (Pi 4)
dwc2
pcie_brcmstb
reset_raspberrypi
xhci_pci
usb_storage
uas
# qemu virt (image/boot-test.sh)
virtio_pci
virtio_mmio
virtio_blk
EOT
