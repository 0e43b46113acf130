#!/usr/bin/env bash
# Runs a command inside an unpacked Debian root file system the way a fresh host would run it, with
# nothing left behind on this machine: a private mount namespace (its mounts vanish with it) and a
# private PID namespace (every process started inside dies with the command), /proc and /dev
# mounted, the host's resolv.conf for apt, and the shared apt package cache
# ($VIRTBUS_CACHE/apt-archives) over /var/cache/apt/archives so repeated installs download nothing.
# Usage: packaging/chroot.sh ROOT COMMAND [ARG...]
set -euo pipefail
root=$(realpath "$1")
shift
archives=${VIRTBUS_CACHE:-/var/cache/virtbus}/apt-archives
mkdir -p "$archives/partial"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
exec unshare --mount --propagation private --pid --fork -- /bin/sh -euc '
  root=$1 archives=$2
  shift 2
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=0755 tmpfs "$root/run"
  mount --bind "$archives" "$root/var/cache/apt/archives"
  exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
' sh "$root" "$archives" "$@"
