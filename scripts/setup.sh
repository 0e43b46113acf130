#!/usr/bin/env bash
# Idempotent set-up for a fresh machine of this kind (Debian 12, Node 20): system packages when root
# and missing, npm ci when node_modules is missing or stale, then the native and TypeScript builds.
# Used by `npm test`, `npm run demo` and `npm run bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-nova and python3-oslo.messaging: test/consumer/nova-objects.test.ts reads the consumer's
# notifications with an oslo.messaging listener and checks them with Nova 26's own payload objects
# (about 210 packages, 34 MB to download, 312 MB installed; about 190 s to install on this machine).
PACKAGES=(libvirt-dev libvirt-daemon libvirt-clients pkg-config rabbitmq-server postgresql prometheus openssl systemd
  util-linux make g++ python3
  qemu-system-x86 libvirt-daemon-driver-qemu busybox-static cpio
  python3-nova python3-oslo.messaging
  dpkg-dev mmdebstrap podman buildah skopeo umoci uidmap)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services are not started on install on these machines (no init system); the sandbox starts its own.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The real-hypervisor tests' guest (kernel + busybox initramfs), cached outside the repository and
# built only when missing (scripts/build-guest.sh; ~70 MB kernel package download the first time).
if [[ $(id -u) -eq 0 ]]; then
  bash scripts/build-guest.sh >/dev/null
fi

# npm ci when the lock file changed since the last install (or nothing is installed).
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.virtbus-lock-hash
if [[ ! -f $stamp || $(cat "$stamp") != "$lock_hash" ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
  echo "$lock_hash" >"$stamp"
fi

# Native addon: rebuild when a source is newer than the built module.
addon=native/build/Release/virtbus_native.node
if [[ ! -f $addon ]] || [[ -n $(find native/src native/binding.gyp -newer "$addon" 2>/dev/null | head -n 1) ]]; then
  echo "setup: building the native addon"
  npm run --silent build:native >/dev/null
fi

echo "setup: compiling TypeScript"
rm -rf dist
npm run --silent build:ts
