#!/usr/bin/env bash
# `podman run` on this project's machines, with the two work-arounds they need (both measured with
# podman 4.3 and crun 1.8 from Debian 12):
# - cgroups are mounted in hybrid mode (v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified),
#   which crun 1.8 refuses ("cgroups in hybrid mode not supported, drop all controllers from
#   cgroupv2"): podman then runs in a private mount namespace without that v2 mount, i.e. plain v1;
# - the VM withholds CAP_SYS_RESOURCE, so podman's default rlimits (above the hard limits here)
#   fail with "setrlimit RLIMIT_NOFILE/RLIMIT_NPROC: Operation not permitted": ask for limits
#   within the current hard ones.
# On a machine with pure cgroup v2 (or v1) and the capability this is plain `podman run "$@"`.
# Usage: packaging/podman-run.sh [podman run options] IMAGE [ARG...]
set -euo pipefail
limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
if [[ $(stat -fc %T /sys/fs/cgroup) != cgroup2fs ]] && mountpoint -q /sys/fs/cgroup/unified; then
  exec unshare --mount --propagation private -- /bin/sh -c \
    'umount /sys/fs/cgroup/unified && exec podman run "$@"' sh "${limits[@]}" "$@"
fi
exec podman run "${limits[@]}" "$@"
