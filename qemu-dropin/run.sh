#!/usr/bin/env bash
# make qemu-dropin: QEMU's own qos-test, unmodified, runs its virtio-9p
# cases (-m slow) against QEMU built with coro9p in place of hw/9pfs
# (build.sh), and side by side against Debian's unmodified binary. Each
# path runs in its own qos-test process, so that one failure (qos-test
# aborts on the first) does not hide the others.
#
# Exit status 0 only if both binaries list the same virtio-9p paths and
# every one passes against QEMU-with-coro9p. Prints a Markdown table; with
# DROPIN_TABLE=FILE also writes it there. (The VM test boots a Linux guest
# on the same binary: make vm-test.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

log() { echo "qemu-dropin: $*" >&2; }

build=$("$here/build.sh" | tail -n 1)
qos=$build/tests/qtest/qos-test
dropin=$build/qemu-system-x86_64
debian=$(command -v qemu-system-x86_64)
# Debian's binary runs qtest (which makes the synth fixtures) with the
# accelerator module Debian leaves out, rebuilt from its source.
moddir=$("$root/qtest-compat/scripts/build-qtest-accel.sh" | tail -n 1)

work=$(mktemp -d /tmp/coro9p-dropin.XXXXXX)
trap 'rm -rf "$work"' EXIT

# qos BINARY ARGS...: qos-test against BINARY (Debian's with its module).
qos() {
  local bin=$1
  shift
  if [ "$bin" = "$debian" ]; then
    QTEST_QEMU_BINARY=$bin QEMU_MODULE_DIR=$moddir timeout 300 "$qos" "$@"
  else
    QTEST_QEMU_BINARY=$bin timeout 300 "$qos" "$@"
  fi
}

for b in debian dropin; do
  qos "${!b}" -m slow -l > "$work/$b.list"
  grep '^/.*/virtio-9p' "$work/$b.list" > "$work/$b.paths" || true
done
status=0
if ! cmp -s "$work/debian.paths" "$work/dropin.paths"; then
  log "the two binaries list different virtio-9p paths:"
  diff "$work/debian.paths" "$work/dropin.paths" >&2 || true
  status=1
fi
n=$(wc -l < "$work/dropin.paths")
[ "$n" -gt 0 ] || { log "qos-test lists no virtio-9p path for QEMU-with-coro9p"; exit 1; }

# run BINARY PATH: "ok MS" or "FAIL MS"; the output goes to $work/last.log.
run() {
  local t0 t1 r=ok
  t0=$(date +%s%N)
  qos "$1" -m slow -p "$2" > "$work/last.log" 2>&1 || r=FAIL
  # A path that ran nothing is no pass.
  grep -q '^ok ' "$work/last.log" || r=FAIL
  t1=$(date +%s%N)
  echo "$r $(((t1 - t0) / 1000000))"
}

table=$work/table.md
{
  echo "| qos-test path (…/virtio-9p-pci/…) | Debian QEMU $(dpkg-query -W -f='${Version}' qemu-system-x86) | ms | QEMU + coro9p | ms |"
  echo "|---|---|--:|---|--:|"
} > "$table"
passed=0
deb_passed=0
while read -r p; do
  read -r rd md < <(run "$debian" "$p")
  read -r rc mc < <(run "$dropin" "$p")
  if [ "$rc" = ok ]; then
    passed=$((passed + 1))
  else
    log "FAILED against QEMU-with-coro9p: $p"
    sed 's/^/    /' "$work/last.log" >&2
    status=1
  fi
  [ "$rd" = ok ] && deb_passed=$((deb_passed + 1))
  echo "| ${p#*/virtio-9p-pci/} | $rd | $md | $rc | $mc |" >> "$table"
done < "$work/dropin.paths"
echo "| **total** | **$deb_passed/$n** | | **$passed/$n** | |" >> "$table"
cat "$table"
if [ -n "${DROPIN_TABLE:-}" ]; then cp "$table" "$DROPIN_TABLE"; fi
log "QEMU's qos-test, virtio-9p paths: Debian's QEMU $deb_passed/$n, QEMU with coro9p $passed/$n"
[ "$status" = 0 ] || exit 1

