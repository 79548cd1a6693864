#!/bin/sh
# Build the local Debian base image's root filesystem as a tarball, once, and cache it.
# No registry can be pulled from here, so every image of the real compose test starts from
# this: Debian bookworm (python3.11 from python3-minimal), curl, and the host's extra CAs so
# apt and pip inside `docker build` get through the TLS-intercepting proxy.
# Usage: base_image.sh OUT.tar   (does nothing when OUT.tar exists)
set -eu
out=$1
[ -s "$out" ] && exit 0
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3-minimal,curl,ca-certificates \
    bookworm "$work/rootfs" "$mirror"
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
fi
chroot "$work/rootfs" update-ca-certificates
rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
mkdir -p "$(dirname "$out")"
tar -C "$work/rootfs" -cf "$out.part" .
mv "$out.part" "$out"
