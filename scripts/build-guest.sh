#!/usr/bin/env bash
# Builds the tiny guest the real-hypervisor tests boot under QEMU (TCG): a Debian kernel taken out of
# the linux-image-amd64 package (downloaded, never installed) and a busybox initramfs whose init takes
# orders from the host over the second serial port, so a test can make the GUEST itself reboot, power
# off, panic or suspend to RAM (see src/sandbox/qemu-guest.ts for the host side of that protocol).
# Cached outside the repository (default /var/cache/virtbus/guest/<version>) and rebuilt only when
# missing: bump GUEST_VERSION whenever the init below changes. Prints the cache directory.
# Usage: scripts/build-guest.sh [cache-root]      (env VIRTBUS_GUEST_CACHE overrides the root too)
set -euo pipefail

GUEST_VERSION=v2
root=${1:-${VIRTBUS_GUEST_CACHE:-/var/cache/virtbus/guest}}
out=$root/$GUEST_VERSION
if [[ -f $out/vmlinuz && -f $out/initrd.img ]]; then
  echo "$out"
  exit 0
fi

for tool in busybox cpio gzip dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || {
    echo "build-guest: $tool is missing (run scripts/setup.sh as root)" >&2
    exit 1
  }
done
busybox_bin=$(command -v busybox)
file -L "$busybox_bin" 2>/dev/null | grep -q 'statically linked' || [[ -f /bin/busybox ]] || {
  echo "build-guest: a static busybox is needed (apt-get install busybox-static)" >&2
  exit 1
}

work=$(mktemp -d /tmp/virtbus-guest-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$root"

# The kernel: linux-image-amd64 only depends on the versioned image package; download both, extract.
(
  cd "$work"
  image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $image ]] || {
    echo "build-guest: cannot resolve linux-image-amd64 (apt-get update?)" >&2
    exit 1
  }
  # apt-get download warns (harmlessly) when run as root in a directory _apt cannot read.
  apt-get download -qq "$image" 2>/dev/null || apt-get download "$image"
  dpkg-deb -x ./*.deb kernel
)
kver=$(ls "$work/kernel/lib/modules")
moddir=$work/kernel/lib/modules/$kver/kernel

initramfs=$work/initramfs
mkdir -p "$initramfs"/{bin,dev,proc,sys,modules}
cp "$busybox_bin" "$initramfs/bin/busybox"
# pvpanic-mmio depends on pvpanic (module "depends=" fields); button + evdev carry the ACPI power button.
for module in misc/pvpanic/pvpanic.ko misc/pvpanic/pvpanic-mmio.ko acpi/button.ko input/evdev.ko; do
  src=$moddir/drivers/$module
  [[ -f $src ]] || src=$(ls "$src".* 2>/dev/null | head -n 1)
  case $src in
    *.xz) xz -dc "$src" >"$initramfs/modules/$(basename "$module")" ;;
    *.zst) zstd -dqc "$src" >"$initramfs/modules/$(basename "$module")" ;;
    *) cp "$src" "$initramfs/modules/" ;;
  esac
done

cat >"$initramfs/init" <<'INIT'
#!/bin/busybox sh
# virtbus test guest init. Console: ttyS0. Orders: one line per order on ttyS1, "ORDER NONCE"; the
# order is echoed on the console as "VIRTBUS-ORDER ORDER NONCE" BEFORE it is carried out, so the host
# knows it arrived and can resend when it did not.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in pvpanic pvpanic-mmio button evdev; do insmod /modules/$m.ko 2>/dev/null; done
echo 1 >/proc/sys/kernel/sysrq

# ACPI power button (virsh shutdown): any event from the "Power Button" input device powers off.
power_button() {
  for i in 1 2 3 4 5 6 7 8 9 10; do
    for ev in /sys/class/input/event*; do
      [ -e "$ev/device/name" ] || continue
      if grep -q "Power Button" "$ev/device/name"; then
        head -c 1 "/dev/input/$(basename "$ev")" >/dev/null
        echo "VIRTBUS-ACPI power button"
        poweroff -f
      fi
    done
    sleep 1
  done
}
power_button &
power_button_pid=$!

orders() {
  [ -e /dev/ttyS1 ] || return 0
  # Opened once, canonical mode without echo: reopening per order or raw mode loses or merges orders.
  stty -F /dev/ttyS1 -echo icanon 2>/dev/null
  exec 3</dev/ttyS1
  while read -r order nonce <&3; do
    [ -n "$order" ] || continue
    echo "VIRTBUS-ORDER $order $nonce"
    case "$order" in
      reboot) reboot -f ;;
      poweroff) poweroff -f ;;
      panic) echo c >/proc/sysrq-trigger ;;
      suspend) echo mem >/sys/power/state; echo "VIRTBUS-WOKE $nonce" ;;
      # A guest that ignores ACPI (virsh shutdown does nothing), as a hung or unwilling OS would.
      ignore-acpi) kill "$power_button_pid" 2>/dev/null ;;
    esac
  done
}
orders &
echo "VIRTBUS-GUEST-READY"
while :; do sleep 3600; done
INIT
chmod +x "$initramfs/init"

tmp_out=$root/.$GUEST_VERSION.tmp.$$
rm -rf "$tmp_out"
mkdir -p "$tmp_out"
cp "$work/kernel/boot/vmlinuz-$kver" "$tmp_out/vmlinuz"
(cd "$initramfs" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$tmp_out/initrd.img"
echo "$kver" >"$tmp_out/kernel-version"
rm -rf "$out"
mv "$tmp_out" "$out"
echo "$out"
