#!/usr/bin/env bash
# Builds the board image: dist/starling-arm64.img.xz and its SHA-256 (dist/starling-arm64.img.xz.sha256),
# plus the raw dist/starling-arm64.img the boot test starts. Debian bookworm arm64 from Debian's packages only
# (mmdebstrap; linux-image-arm64; raspi-firmware and the Pis' Wi-Fi firmware from non-free-firmware), the
# arm64 .deb of Starling, and starling-board (image/board/: the set-up from the boot partition, the initramfs,
# journald in RAM, networkd, keys-only SSH).
#
#   image/build-image.sh arm64          (first run: about 5 minutes and 400 MB from Debian's mirror; then
#                                        the Debian root is cached and a rebuild takes about a minute)
#
# Layout, as a Raspberry Pi boots it from an SD card: an MBR; partition 1, FAT32 "STARLING" (256 MiB from
# 4 MiB): the Pi firmware, config.txt, cmdline.txt, the kernel, the initramfs and the device trees of the Pi 3,
# 4 and Zero 2 W; partition 2, ext4 "starling-root", grown to fill the card on the first boot.
# No SSH host key, node key, machine id or password is in the image: each board makes its own on first boot.
# Needs root (chroot, device nodes), mmdebstrap, qemu-user-static with binfmt_misc (the arm64 maintainer
# scripts run under emulation), dosfstools, mtools, e2fsprogs, fdisk and xz (image/setup.sh --all).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: build-image.sh arm64}
[ "$arch" = arm64 ] || { echo "build-image: only arm64 (the Raspberry Pi 3, 4, Zero 2 W), not '$arch'" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "build-image: needs root (chroot and device nodes in the Debian root)" >&2; exit 1; }
for tool in mmdebstrap mkfs.vfat mcopy mkfs.ext4 sfdisk xz cpio; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool missing (bash image/setup.sh --all)" >&2; exit 1; }
done
version=$(node -p "require('./package.json').version")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/starling
mkdir -p "$cache" dist

# The arm64 executable's package, and starling-board (architecture all; it provides linux-initramfs-tool so
# that the kernel installs without initramfs-tools, whose mkinitramfs takes 9 minutes under qemu-user).
bash image/build-exe.sh arm64
bash image/build-deb.sh arm64
deb=dist/starling_${version}_arm64.deb
board=dist/starling-board_${version}_all.deb
broot=dist/deb/board
rm -rf "$broot" && mkdir -p "$broot/DEBIAN"
install -D -m 0755 image/board/setup "$broot/usr/lib/starling/board/setup"
install -D -m 0755 image/board/init "$broot/usr/lib/starling/board/init"
install -D -m 0755 image/board/initramfs.sh "$broot/usr/lib/starling/board/initramfs.sh"
install -D -m 0755 image/board/kernel-postinst "$broot/etc/kernel/postinst.d/starling-initramfs"
install -D -m 0644 image/board/starling-board.service "$broot/lib/systemd/system/starling-board.service"
install -D -m 0644 image/board/starling-board.conf "$broot/lib/systemd/system/starling.service.d/board.conf"
install -D -m 0644 image/board/network-wired.network "$broot/lib/systemd/network/80-starling-wired.network"
install -D -m 0644 image/board/network-wireless.network "$broot/lib/systemd/network/80-starling-wireless.network"
install -D -m 0644 image/board/journald.conf "$broot/usr/lib/systemd/journald.conf.d/starling-board.conf"
install -D -m 0644 image/board/timesyncd.conf "$broot/usr/lib/systemd/timesyncd.conf.d/starling-board.conf"
install -D -m 0644 image/board/sshd.conf "$broot/etc/ssh/sshd_config.d/starling-board.conf"
install -D -m 0644 image/board/gpio.rules "$broot/lib/udev/rules.d/60-starling-gpio.rules"
install -D -m 0644 image/board/sysusers.conf "$broot/usr/lib/sysusers.d/starling-board.conf"
(cd "$broot" && find etc -type f | sed 's|^|/|') > "$broot/DEBIAN/conffiles"
cat > "$broot/DEBIAN/control" <<CONTROL
Package: starling-board
Version: $version
Architecture: all
Maintainer: Starling developers <starling@localhost>
Depends: busybox-static, mawk, fdisk, e2fsprogs, util-linux, openssh-server, wpasupplicant, systemd-sysv
Provides: linux-initramfs-tool
Section: misc
Priority: optional
Description: Starling board image: set-up from the boot partition, initramfs, wear-saving defaults
 Takes hostname, wifi.conf, authorized_keys, trusted/ and starling.yaml from the FAT boot partition at each
 boot, grows the root file system on the first, and builds a small busybox initramfs for each kernel.
CONTROL
cat > "$broot/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then systemd-sysusers starling-board.conf; fi
if [ "$1" = configure ] && command -v deb-systemd-helper >/dev/null 2>&1; then
  deb-systemd-helper enable starling-board.service >/dev/null || true
  deb-systemd-helper enable systemd-networkd.service >/dev/null || true
fi
exit 0
POSTINST
chmod 0755 "$broot/DEBIAN/postinst"
dpkg-deb --root-owner-group -Zxz -z1 --build "$broot" "$board" >/dev/null

# 1. The Debian root, cached by its package list (and the board package's dependencies).
packages="systemd,systemd-sysv,udev,dbus,kmod,iproute2,systemd-timesyncd,libpam-systemd,openssh-server,wpasupplicant,wireless-regdb,firmware-brcm80211,raspi-firmware,linux-image-arm64,libzmq5,ca-certificates,busybox-static,mawk,fdisk,e2fsprogs,util-linux,less,nano"
basekey=$( { echo "$packages $mirror"; sed -n '/^Depends:/p;/^Provides:/p' "$broot/DEBIAN/control"; sed -n '/^# base:start/,/^# base:end/p' "$0"; } | sha256sum | cut -c1-16)
base="$cache/board-root-arm64-$basekey"
if [ ! -f "$base/.complete" ]; then
# base:start
  echo "build-image: mmdebstrap bookworm arm64 from $mirror (about 5 minutes)" >&2
  # A run that was killed may have left the file-mirror hook's bind mounts behind.
  awk -v p="$cache/board-root-arm64-" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf "$base.tmp" "$cache"/board-root-arm64-*
  # raspi-firmware's kernel hook writes cmdline.txt from these (the root by label, so that an SD card, a USB
  # disk and the emulated board's virtio disk all boot), and config.txt for 64-bit Pis.
  # force-confold: raspi-firmware's conffile /etc/default/raspi-firmware keeps the two settings above.
  mmdebstrap --architectures=arm64 --variant=apt --components=main,non-free-firmware \
    --dpkgopt=force-confold --dpkgopt=force-confdef \
    --include="$packages" --include="$(realpath "$board")" \
    --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
    --setup-hook='mkdir -p "$1/etc/default" "$1/boot/firmware"' \
    --setup-hook='printf "ROOTPART=LABEL=starling-root\nCONSOLES=\"ttyS1,115200 tty0\"\n" > "$1/etc/default/raspi-firmware"' \
    --customize-hook='echo starling > "$1/etc/hostname"' \
    bookworm "$base.tmp" "$mirror" >"$cache/mmdebstrap.log" 2>&1 \
    || { tail -30 "$cache/mmdebstrap.log" >&2; exit 1; }
  mv "$base.tmp" "$base" && touch "$base/.complete"
# base:end
fi

# 2. The image's root: the cached root, this Starling and this starling-board, and what each board must make
# for itself removed. Cached by its inputs, so that a rerun of the boot test costs only the boot.
key=$( { echo "$basekey"; cat "$deb" "$0" image/board/*; } | sha256sum | cut -c1-16)
img=dist/starling-arm64.img
if [ -f "$img" ] && [ "$(cat "$img.key" 2>/dev/null)" = "$key" ] && [ -f "$img.xz" ]; then
  echo "build-image: $img.xz is up to date" >&2
  exit 0
fi
work=dist/image
rm -rf "$work" && mkdir -p "$work"
root=$work/root
cp -a "$base" "$root" && rm -f "$root/.complete"
cp "$deb" "$board" "$root/tmp/"
# /proc in the root while maintainer scripts run there (ischroot, and raspi-firmware's hook through it, read it).
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
{ chroot "$root" dpkg -i "/tmp/$(basename "$board")" && chroot "$root" dpkg -i "/tmp/$(basename "$deb")"; } >"$work/dpkg.log" 2>&1 \
  || { cat "$work/dpkg.log" >&2; exit 1; }
rm -f "$root/tmp/"*.deb
kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -1)")
# The initramfs, on this host (the hook in the root made one under emulation; this one has the current init),
# then raspi-firmware's hook copies kernel, initramfs and device trees to the boot partition again.
bash image/board/initramfs.sh "$root" "$kver" "$root/boot/initrd.img-$kver"
DEB_MAINT_PARAMS=configure chroot "$root" /etc/kernel/postinst.d/z50-raspi-firmware "$kver" >>"$work/dpkg.log" 2>&1 \
  || { tail -5 "$work/dpkg.log" >&2; exit 1; }
cat > "$root/etc/fstab" <<'FSTAB'
# Board image: the root and the boot partition by label; noatime, so that reading a file never writes to the card.
LABEL=starling-root  /              ext4  noatime,errors=remount-ro  0 1
LABEL=STARLING       /boot/firmware vfat  noatime,umask=0022,shortname=mixed,nofail  0 2
FSTAB
# What each board makes for itself on the first boot, and what an image need not carry.
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id"
: > "$root/etc/machine-id"
rm -rf "$root/var/lib/starling/identity" "$root/var/lib/starling-board" "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/* "$root/root/.ssh" "$root"/tmp/*
umount "$root/proc"
# /tmp in RAM (systemd's tmp.mount), as the journal is: less wear on the card.
cp "$root/usr/share/systemd/tmp.mount" "$root/etc/systemd/system/tmp.mount"
mkdir -p "$root/etc/systemd/system/local-fs.target.wants" && ln -sf ../tmp.mount "$root/etc/systemd/system/local-fs.target.wants/tmp.mount"
# Timers that write to the card every day (apt's package lists, dpkg's database backup) stay off, and so does
# the D-Bus wpa_supplicant (NetworkManager's; Wi-Fi here is wpa_supplicant@wlan0 from wifi.conf).
chroot "$root" systemctl disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer wpa_supplicant.service >/dev/null 2>&1
# SSH stays off until the boot partition gives root a key (starling-board enables it).
chroot "$root" systemctl disable ssh.service >/dev/null 2>&1 || true
rm -f "$root/etc/systemd/system/sshd.service" "$root/etc/systemd/system/multi-user.target.wants/ssh.service"
# The boot partition's files leave the root (its /boot/firmware is the mount point).
mv "$root/boot/firmware" "$work/firmware" && mkdir "$root/boot/firmware"

# 3. The disk: MBR, FAT32 boot partition, ext4 root sized to what it holds plus room for a first start.
boot_mib=256
used_mib=$(du -sm --apparent-size "$root" | cut -f1)
root_mib=$(( used_mib * 115 / 100 + 160 ))
rm -f "$work/boot.fat" "$work/root.ext4"
mkfs.vfat -F 32 -n STARLING -C "$work/boot.fat" $((boot_mib * 1024)) >/dev/null
mcopy -s -i "$work/boot.fat" "$work/firmware"/* ::/
mkfs.ext4 -q -L starling-root -E root_owner=0:0 -O ^metadata_csum_seed -d "$root" "$work/root.ext4" "${root_mib}M"
rm -f "$img.tmp"
truncate -s $(( (4 + boot_mib + root_mib) * 1024 * 1024 )) "$img.tmp"
sfdisk --quiet "$img.tmp" <<PARTS
label: dos
start=4MiB, size=${boot_mib}MiB, type=c, bootable
start=$((4 + boot_mib))MiB, type=83
PARTS
dd if="$work/boot.fat" of="$img.tmp" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$img.tmp" bs=1M seek=$((4 + boot_mib)) conv=notrunc,sparse status=none
mv "$img.tmp" "$img"
# The boot test's kernel and initramfs (qemu's -kernel and -initrd), the ones on the boot partition.
cp "$work/firmware/vmlinuz-$kver" dist/image/vmlinuz && cp "$work/firmware/initrd.img-$kver" dist/image/initrd.img
echo "$kver" > dist/image/kernel-version
rm -rf "$root" "$work/firmware" "$work/boot.fat" "$work/root.ext4"
xz -T0 -6 -c "$img" > "$img.xz.tmp" && mv "$img.xz.tmp" "$img.xz"
(cd dist && sha256sum "$(basename "$img.xz")" > "$(basename "$img.xz").sha256")
echo "$key" > "$img.key"
echo "build-image: $img.xz ($(du -m "$img.xz" | cut -f1) MB; $(du -m --apparent-size "$img" | cut -f1) MB raw, root ${used_mib} MB used)" >&2
