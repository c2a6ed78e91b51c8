#!/bin/sh
# Builds Starling's small initramfs for the arm64 board image: busybox, the kernel modules needed to reach the
# root (SD/MMC hosts of the Raspberry Pis, virtio for emulated boards, USB storage, ext4 and what they depend
# on) and image/board/init. Plain sh, cpio and gzip, so that it runs on the build host against the image's
# root (no emulation: a second rather than nine minutes of mkinitramfs under qemu-user) and on the device
# itself, where the kernel's postinst hook calls it when apt installs a new kernel.
#
#   initramfs.sh ROOT KERNEL_VERSION OUT          e.g. initramfs.sh /tmp/root 6.1.0-28-arm64 /tmp/root/boot/initrd.img-6.1.0-28-arm64
set -eu
root=${1:?usage: initramfs.sh ROOT KERNEL_VERSION OUT}; kver=${2:?kernel version}; out=${3:?output file}
init=${STARLING_INIT:-$root/usr/lib/starling/board/init}
mods=$root/lib/modules/$kver
[ -d "$mods" ] || { echo "initramfs: no $mods" >&2; exit 1; }
[ -x "$root/bin/busybox" ] || { echo "initramfs: no $root/bin/busybox (package busybox-static)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/lib/modules/$kver"
cp "$root/bin/busybox" "$work/bin/busybox"
cp "$init" "$work/init"; chmod 0755 "$work/init"
# The modules wanted (by directory), then every module they depend on, from modules.dep.
( cd "$mods" && find kernel/drivers/mmc kernel/drivers/virtio kernel/drivers/block/virtio_blk.ko* \
    kernel/drivers/usb/storage kernel/drivers/usb/host kernel/drivers/usb/dwc2 kernel/drivers/usb/core \
    kernel/drivers/pci/controller kernel/drivers/reset kernel/drivers/scsi/sd_mod.ko* kernel/drivers/firmware \
    kernel/fs/ext4 kernel/crypto/crc32c_generic.ko* kernel/drivers/regulator kernel/drivers/clk -name '*.ko*' 2>/dev/null ) > "$work/wanted"
awk -v W="$work/wanted" 'BEGIN { while ((getline l < W) > 0) want[l] = 1 }
  { m = $1; sub(/:$/, "", m); if (m in want) { print m; for (i = 2; i <= NF; i++) print $i } }' "$mods/modules.dep" | sort -u > "$work/list"
while read -r m; do mkdir -p "$work/lib/modules/$kver/$(dirname "$m")"; cp "$mods/$m" "$work/lib/modules/$kver/$m"; done < "$work/list"
for f in modules.dep modules.alias modules.builtin modules.order modules.softdep modules.symbols; do
  [ -f "$mods/$f" ] && cp "$mods/$f" "$work/lib/modules/$kver/"
done
rm "$work/wanted" "$work/list"
if command -v cpio >/dev/null 2>&1; then cpio=cpio; elif command -v busybox >/dev/null 2>&1; then cpio="busybox cpio"; else echo "initramfs: no cpio (apt-get install cpio)" >&2; exit 1; fi
( cd "$work" && find . | sort | $cpio -o -H newc 2>"$work.cpio.log" ) | gzip -9 > "$out.tmp" \
  || { cat "$work.cpio.log" >&2; rm -f "$work.cpio.log"; exit 1; }
rm -f "$work.cpio.log"
mv "$out.tmp" "$out"
echo "initramfs: $out ($(du -k "$out" | cut -f1) KiB, $(find "$work/lib/modules" -name '*.ko*' | wc -l) modules)" >&2
