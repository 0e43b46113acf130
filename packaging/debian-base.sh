#!/usr/bin/env bash
# Prints the path of a cached Debian 12 (bookworm) base root file system tarball made by mmdebstrap
# from the Debian mirror (variant apt: essential packages plus apt, so a .deb can be installed into
# it with its dependencies resolved). The package tests unpack it as a "fresh Debian 12 host" and
# scripts/image.sh builds the container image on it. Built once (about a minute) and cached outside
# the repository; the cache key covers everything that shapes it, so changing this file's recipe
# makes a new one.
# Usage: packaging/debian-base.sh        Env: VIRTBUS_CACHE (default /var/cache/virtbus)
set -euo pipefail

MIRROR=${VIRTBUS_DEBIAN_MIRROR:-http://deb.debian.org}
SOURCES=(
  "deb $MIRROR/debian bookworm main"
  "deb $MIRROR/debian bookworm-updates main"
  "deb $MIRROR/debian-security bookworm-security main"
)
# The apt lists stay in the tarball, so an install into it needs no `apt-get update` while the
# mirror still serves the same versions (the callers update and retry when it does not).
OPTIONS=(--quiet --mode=root --variant=apt --skip=cleanup/apt/lists)

cache=${VIRTBUS_CACHE:-/var/cache/virtbus}/debian-base
key=$(printf '%s\n' v1 "${SOURCES[@]}" "${OPTIONS[@]}" | sha256sum | cut -c1-12)
tarball=$cache/bookworm-$key.tar
if [[ -f $tarball ]]; then
  echo "$tarball"
  exit 0
fi
command -v mmdebstrap >/dev/null || {
  echo "debian-base: mmdebstrap is missing (run scripts/setup.sh as root)" >&2
  exit 1
}
mkdir -p "$cache"
# One builder at a time; a second caller waits and then finds the tarball.
exec 9>"$cache/.lock"
flock 9
if [[ ! -f $tarball ]]; then
  partial=$(mktemp -p "$cache" .partial.XXXXXX.tar)
  mmdebstrap "${OPTIONS[@]}" bookworm "$partial" "${SOURCES[@]}" >&2
  mv "$partial" "$tarball"
fi
echo "$tarball"
