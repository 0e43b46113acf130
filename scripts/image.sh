#!/usr/bin/env bash
# Builds the virtbus OCI image without any registry: the root file system is Debian 12 from the
# Debian mirror (mmdebstrap, packaging/debian-base.sh, cached), virtbus is installed on it from the
# very .deb that scripts/package.sh builds (so the image and the hypervisor package cannot drift),
# and buildah assembles the image into the local containers storage under the name it prints:
#   localhost/virtbus:<version>
# It also writes that image as an OCI archive, dist/virtbus-image_<version>.oci.tar, to copy to a
# registry (skopeo copy oci-archive:… docker://registry.example.org/virtbus:<version>) or to load
# into a cluster's nodes. deploy/kubernetes names localhost/virtbus; its kustomization.yaml maps that
# to your registry.
#
# The image runs as uid/gid 10001 (user virtbus, created before the package so sysusers keeps it:
# the Kubernetes manifests' runAsUser), entrypoint /usr/bin/virtbus, command --help: give `bridge`
# or `consumer` as the command.
# Usage: scripts/image.sh [output-dir]    (default dist/; `npm run image` runs setup first)
# Env:   VIRTBUS_IMAGE_DEB   install this .deb instead of building one
#        VIRTBUS_IMAGE_NAME  the image name (default localhost/virtbus:<version>)
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-dist}")
for tool in buildah skopeo; do
  command -v "$tool" >/dev/null || {
    echo "image: $tool is missing (run scripts/setup.sh as root)" >&2
    exit 1
  }
done

deb=${VIRTBUS_IMAGE_DEB:-}
if [[ -z $deb ]]; then
  deb=$(bash scripts/package.sh "$out")
fi
deb=$(realpath "$deb")
version=$(dpkg-deb -f "$deb" Version)
name=${VIRTBUS_IMAGE_NAME:-localhost/virtbus:$version}
base=$(bash packaging/debian-base.sh)

tmp_root=${TMPDIR:-/tmp}
[[ -d /dev/shm && -w /dev/shm ]] && tmp_root=/dev/shm
work=$(mktemp -d -p "$tmp_root" virtbus-image.XXXXXX)
ctr=
cleanup() {
  [[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs
mkdir "$rootfs"
tar -xf "$base" -C "$rootfs"
cp "$deb" "$rootfs/tmp/virtbus.deb"

# The user first, with the manifests' fixed ids; systemd-standalone-sysusers (not systemd) satisfies
# the package's sysusers dependency in an image without an init system.
cat >"$rootfs/tmp/install.sh" <<'EOF'
set -eu
groupadd --system --gid 10001 virtbus
useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin --comment "virtbus bridge and consumer" virtbus
install_virtbus() {
  apt-get install -y -q --no-install-recommends systemd-standalone-sysusers /tmp/virtbus.deb
}
# The base's apt lists may be older than the mirror: update once when the install cannot fetch.
install_virtbus || { apt-get update -q && install_virtbus; }
# No apt-get clean: /var/cache/apt/archives is the shared cache mounted by chroot.sh (it does not
# end up in the image), and cleaning it would make the next build download everything again.
rm -rf /var/lib/apt/lists/* /tmp/virtbus.deb /tmp/install.sh /var/log/apt /var/log/dpkg.log \
  /var/cache/debconf/*-old /var/lib/dpkg/*-old
# The working directory (relative defaults such as ./data/outbox land here; pods mount volumes).
install -d -o virtbus -g virtbus -m 0750 /var/lib/virtbus
: >/etc/resolv.conf
EOF
# apt's archives never end up in the image: the chroot sees the shared cache mounted over them.
bash packaging/chroot.sh "$rootfs" /bin/sh /tmp/install.sh >"$work/install.log" 2>&1 || {
  cat "$work/install.log" >&2
  echo "image: installing the package into the image root failed" >&2
  exit 1
}

tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .
ctr=$(buildah from --quiet scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config \
  --entrypoint '["/usr/bin/virtbus"]' --cmd '--help' \
  --user 10001:10001 --workingdir /var/lib/virtbus \
  --env NODE_ENV=production \
  --port 9478/tcp --port 9479/tcp \
  --label org.opencontainers.image.title=virtbus \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.description="libvirt lifecycle events onto RabbitMQ (bridge) and a Nova-style instance database (consumer)" \
  --label org.opencontainers.image.base.name=debian:bookworm \
  --os linux --arch amd64 "$ctr"
buildah commit --quiet --rm --format oci "$ctr" "$name" >/dev/null
ctr=

mkdir -p "$out"
archive=$out/virtbus-image_${version}.oci.tar
rm -f "$archive"
skopeo copy --quiet "containers-storage:$name" "oci-archive:$archive:$name"
echo "$name"
