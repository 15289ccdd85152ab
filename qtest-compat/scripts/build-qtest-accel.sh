#!/usr/bin/env bash
# Builds QEMU's qtest accelerator module (accel-qtest-x86_64.so), which
# Debian deletes from its qemu-system-x86 package, from Debian's own source
# package of the exact installed version, so that the installed QEMU can run
# `-accel qtest` (and so create the synth fixtures) with
# QEMU_MODULE_DIR=<the printed directory>.
#
# Idempotent: a module already built for the installed version is reused.
# Works outside the source tree (CORO9P_CACHE, default ~/.cache/coro9p).
# Prints the module directory on its last line.
set -euo pipefail

cache="${CORO9P_CACHE:-$HOME/.cache/coro9p}"
ver=$(dpkg-query -W -f='${Version}' qemu-system-x86)
# QEMU's configure refuses paths with colons; epochs have one.
tag=$(echo "$ver" | tr ':' '_')
moddir="$cache/qemu-qtest-modules/$tag"
if [ -f "$moddir/accel-qtest-x86_64.so" ]; then
  echo "$moddir"
  exit 0
fi

log() { echo "build-qtest-accel: $*" >&2; }

need=()
for p in meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev \
         python3-venv flex bison; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

src=$("$(dirname "$0")/qemu-source.sh")
work="$cache/qemu-src"
build="$work/build-$tag"
if [ ! -f "$build/build.ninja" ]; then
  log "configuring (modules, x86_64-softmmu only)"
  mkdir -p "$build"
  (cd "$build" && "$src/configure" --enable-modules --target-list=x86_64-softmmu \
     --without-default-features --disable-docs \
     --with-pkgversion="Debian $ver" >&2)
fi
log "building accel-qtest-x86_64.so"
ninja -C "$build" accel-qtest-x86_64.so >&2
mkdir -p "$moddir"
cp "$build/accel-qtest-x86_64.so" "$moddir/"
echo "$moddir"
