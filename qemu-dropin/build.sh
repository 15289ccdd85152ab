#!/usr/bin/env bash
# Builds QEMU with coro9p in place of hw/9pfs's server and fs drivers
# (docs/qemu-dropin.md), from Debian's source package of the installed
# qemu-system-x86, and prints the build folder on its last line; it holds
# qemu-system-x86_64 and tests/qtest/qos-test.
#
# QEMU's virtio transport (virtio-9p-device.c) and fsdev option parsing
# stay as they are; the build is switched at build time: coro9p-glue.c and
# include/coro9p.h are copied into hw/9pfs/, hw/9pfs/meson.build is
# replaced by meson.build.in (glue + libcoro9p.a) and devices.mak becomes
# the device list. None of QEMU's code is in this repository.
#
# Idempotent and cached (CORO9P_CACHE, default ~/.cache/coro9p): the first
# build takes about 6 minutes on 2 cores, a rebuild after a coro9p change
# only relinks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache="${CORO9P_CACHE:-$HOME/.cache/coro9p}"

log() { echo "qemu-dropin: $*" >&2; }

need=()
for p in qemu-system-x86 meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev zlib1g-dev \
         libfdt-dev libcap-ng-dev libattr1-dev python3-venv flex bison gcc \
         qemu-system-data seabios ipxe-qemu; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing Debian packages: ${need[*]} (run as root)"; exit 1; }
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

ver=$(dpkg-query -W -f='${Version}' qemu-system-x86)
# QEMU's configure refuses paths with colons; epochs have one.
tag=$(echo "$ver" | tr ':' '_')
src=$("$root/qtest-compat/scripts/qemu-source.sh")

# coro9p, as the static library QEMU links.
log "building libcoro9p.a (release)"
(cd "$root" && ${CARGO:-cargo} build --release --lib -q)
lib=${CARGO_TARGET_DIR:-$root/target}/release/libcoro9p.a
case $lib in /*) ;; *) lib=$root/$lib ;; esac
[ -f "$lib" ] || { log "no $lib after cargo build"; exit 1; }

# A copy of Debian's source, switched to coro9p.
dsrc=$cache/qemu-dropin/src-$tag
if [ ! -f "$dsrc/configure" ]; then
  log "copying $src"
  rm -rf "$dsrc" "$dsrc.tmp"
  mkdir -p "$(dirname "$dsrc")"
  cp -a "$src" "$dsrc.tmp"
  mv "$dsrc.tmp" "$dsrc"
fi
# put FILE DEST: install only when it differs, so that ninja and meson see
# no change (and do not reconfigure) when there is none.
put() { cmp -s "$1" "$2" || install -m 644 "$1" "$2"; }
put "$here/coro9p-glue.c" "$dsrc/hw/9pfs/coro9p-glue.c"
put "$root/include/coro9p.h" "$dsrc/hw/9pfs/coro9p.h"
put "$here/devices.mak" "$dsrc/configs/devices/x86_64-softmmu/coro9p.mak"
sed "s|@LIBCORO9P@|$lib|" "$here/meson.build.in" > "$dsrc/hw/9pfs/meson.build.coro9p"
put "$dsrc/hw/9pfs/meson.build.coro9p" "$dsrc/hw/9pfs/meson.build"

build=$cache/qemu-dropin/build-$tag
config=(--target-list=x86_64-softmmu
  --without-default-features --without-default-devices --with-devices-x86_64=coro9p
  --enable-virtfs --enable-attr --enable-cap-ng --enable-tcg --enable-kvm
  --disable-docs --disable-werror)
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$build/coro9p-configure" 2> /dev/null)" != "${config[*]}" ]; then
  log "configuring (x86_64-softmmu, pc machine, virtfs, TCG and KVM)"
  rm -rf "$build" && mkdir -p "$build"
  (cd "$build" && "$dsrc/configure" "${config[@]}" \
     --with-pkgversion="Debian $ver, hw/9pfs replaced by coro9p" >&2)
  echo "${config[*]}" > "$build/coro9p-configure"
fi
# The link does not depend on libcoro9p.a as far as ninja knows: relink
# when the library is newer than the binary (make test builds twice).
if [ "$lib" -nt "$build/qemu-system-x86_64" ]; then rm -f "$build/qemu-system-x86_64"; fi
log "building qemu-system-x86_64 and qos-test"
ninja -C "$build" qemu-system-x86_64 tests/qtest/qos-test >&2

# Debian's source has no firmware: the binary looks for it in the build
# folder's qemu-bundle, where the files of Debian's packages (which its own
# binary finds through its firmware path) are linked.
datadir=$(find "$build/qemu-bundle" -type d -path '*/share/qemu' 2> /dev/null | head -n 1)
if [ -z "$datadir" ]; then
  datadir=$build/qemu-bundle$(sed -n 's/^#define CONFIG_QEMU_DATADIR "\(.*\)"$/\1/p' "$build/config-host.h")
  mkdir -p "$datadir"
fi
for f in /usr/share/qemu/* /usr/share/seabios/* /usr/lib/ipxe/qemu/*; do
  t=$datadir/$(basename "$f")
  [ -e "$t" ] || [ -L "$t" ] || ln -s "$f" "$t"
done
echo "$build"
