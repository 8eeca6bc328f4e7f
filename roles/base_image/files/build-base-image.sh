#!/usr/bin/env bash
# Builds one base image from a copy of the minbase seed (roles/base_image: the deploy runs one
# per missing image, side by side):
#
#   build-base-image.sh WORKDIR SEED_ROOTFS APT_CACHE IMAGE MESSAGE PACKAGE... -- EXCLUDE...
#
# WORKDIR is the image's own workspace (emptied first), APT_CACHE its own package cache (kept
# across runs, so a rebuild fetches only what changed; one per image because apt locks its
# cache), IMAGE the name:tag to import as, EXCLUDE the paths (relative to /) left out of it.
set -euo pipefail

workdir=$1 seed=$2 cache=$3 image=$4 message=$5
shift 5
packages=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do packages+=("$1"); shift; done
[ $# -gt 0 ] && shift
excludes=()
for path in "$@"; do excludes+=("--exclude=./$path"); done
rootfs=$workdir/rootfs

# Nothing may stay mounted in the workspace when it is removed: through the bind mount that
# would empty the cache. Mounts a killed run left (SIGKILL, an async timeout: no trap runs) go
# first; when this run ends, by success or failure, its own mounts and workspace go.
unmount_below() {
  findmnt --list --noheadings --output TARGET | awk -v below="$1/" 'index($0, below) == 1' \
    | sort -r | while read -r mount; do
    umount "$mount"
  done
}
cleanup() {
  unmount_below "$workdir"
  rm -rf "$workdir"
}
trap cleanup EXIT

unmount_below "$workdir"
rm -rf "$workdir"
mkdir -p --mode=0700 "$workdir" "$cache"
# cp -a keeps the device nodes, hard links and owners debootstrap made.
cp -a "$seed" "$rootfs"

# The postinsts get /proc, as under debootstrap (which mounts no /sys in a container); apt
# keeps the packages it fetches in the image's cache.
mount -t proc proc "$rootfs/proc"
mount --bind "$cache" "$rootfs/var/cache/apt/archives"
# As debootstrap does: no service of the image starts on the build host. The host's resolver
# for the fetch; the image keeps its own resolv.conf.
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
if [ -e "$rootfs/etc/resolv.conf" ] || [ -L "$rootfs/etc/resolv.conf" ]; then
  mv "$rootfs/etc/resolv.conf" "$workdir/resolv.conf"
fi
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"

# The seed's package lists are debootstrap's: no apt-get update, the same versions. No
# Recommends, as debootstrap --include. apt configures only what a Pre-Depends needs and leaves
# the rest to one `dpkg --configure --pending` (Configure=smart), as debootstrap's
# `dpkg --configure -a`: dpkg's order of the postinsts keeps the system users' ids. No pty:
# there is no /dev/pts in the root file system.
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install --yes --no-install-recommends \
  -o PackageManager::Configure=smart -o DPkg::ConfigurePending=true -o Dpkg::Use-Pty=false \
  "${packages[@]}"

rm "$rootfs/etc/resolv.conf"
if [ -e "$workdir/resolv.conf" ] || [ -L "$workdir/resolv.conf" ]; then
  mv "$workdir/resolv.conf" "$rootfs/etc/resolv.conf"
fi
rm "$rootfs/usr/sbin/policy-rc.d"
umount "$rootfs/var/cache/apt/archives" "$rootfs/proc"

# GNU tar: device nodes, hard links and ownership of a root file system survive byte for byte.
# Streamed into `docker import` (no community.docker module wraps it): no archive on disk and
# no build context, so the tree is read once.
tar --numeric-owner -C "$rootfs" "${excludes[@]}" -c . \
  | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
      --message "$message" - "$image"
