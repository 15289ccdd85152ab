#!/usr/bin/env bash
# extract-vmlinux VMLINUZ OUT: writes the uncompressed ELF vmlinux inside a
# bzImage, the way the kernel's scripts/extract-vmlinux does it: find each
# compressor's magic bytes in the image, decompress from there, keep the
# first result that is an ELF file. QEMU boots the ELF (PVH entry) about
# three times faster under TCG than the bzImage, which decompresses itself.
set -euo pipefail
img=$1 out=$2
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT

is_elf() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }

# try_decompress MAGIC_FIRST MAGIC_REST COMMAND...: as the kernel's script,
# tr turns the first magic byte into a newline and the rest into REST, so
# grep -b gives the offset of the byte after the first one: tail's 1-based
# +N then starts at the first.
try_decompress() {
  local first=$1 rest=$2 pos
  shift 2
  for pos in $(tr "$first\n$rest" "\n$rest=" < "$img" | grep -abo "^$rest" | cut -d: -f1); do
    tail -c+"$pos" "$img" | "$@" > "$tmp" 2> /dev/null || true
    if [ -s "$tmp" ] && is_elf "$tmp"; then
      mv "$tmp" "$out"
      trap - EXIT
      return 0
    fi
  done
  return 1
}

try_decompress '\037\213\010' xy gunzip ||
  try_decompress '\3757zXZ\000' abcde unxz ||
  try_decompress 'BZh' xy bunzip2 ||
  try_decompress '\135\0\0\0' xxx unlzma ||
  try_decompress '\211\114\132' xy 'lzop' -d ||
  try_decompress '\002!L\030' xxx 'lz4' -d ||
  try_decompress '(\265/\375' xxx unzstd ||
  { echo "extract-vmlinux: no compressed ELF kernel found in $img" >&2; exit 1; }
