#!/usr/bin/env bash
# Fetches Debian's source package of the installed qemu-system-x86 (the
# exact version) into the cache, once, and prints the unpacked source
# directory on its last line. Used by build-qtest-accel.sh and by
# qemu-dropin/build.sh. Installs dpkg-dev and a deb-src entry when missing
# (as root, as on CI and these machines).
#
# Environment: CORO9P_CACHE (default ~/.cache/coro9p).
set -euo pipefail

cache="${CORO9P_CACHE:-$HOME/.cache/coro9p}"
srcver=$(dpkg-query -W -f='${source:Version}' qemu-system-x86)
# The upstream part of the version without the epoch: 1:7.2+dfsg-7 -> 7.2+dfsg.
upver=${srcver#*:}
upver=${upver%-*}
work="$cache/qemu-src"
src="$work/qemu-$upver"
if [ -f "$src/configure" ]; then
  echo "$src"
  exit 0
fi

log() { echo "qemu-source: $*" >&2; }
if ! dpkg-query -W -f='${Status}' dpkg-dev 2> /dev/null | grep -q 'install ok installed'; then
  log "installing dpkg-dev"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >&2
fi
# deb-src for the same archive the binary came from.
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  log "adding deb-src entries"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    > /etc/apt/sources.list.d/coro9p-deb-src.sources
  apt-get update -qq
fi
mkdir -p "$work"
log "fetching the source of qemu $srcver"
(cd "$work" && apt-get source -qq "qemu=$srcver" >&2)
[ -f "$src/configure" ] || { log "apt-get source did not unpack $src"; exit 1; }
echo "$src"
