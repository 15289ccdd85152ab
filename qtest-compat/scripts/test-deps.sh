#!/usr/bin/env bash
# What `make test` needs beyond the Rust toolchain: Debian's QEMU (the parity
# oracle for qtest-compat's --target qemu and --compare) and the qtest
# accelerator module Debian leaves out of it, valgrind and a C compiler. Idempotent; installs with
# apt-get when something is missing (as root, as on CI and these machines).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# QEMU (the parity oracle), valgrind and a C compiler (the C ABI tests).
missing=()
for p in qemu-system-x86 valgrind gcc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: ${missing[*]} missing; run 'sudo apt-get install ${missing[*]}' (or make test as root)." >&2
    exit 1
  fi
  echo "test-deps: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
"$here/build-qtest-accel.sh" > /dev/null
