#!/usr/bin/env bash
# What `make test` needs beyond the Rust toolchain: Debian's QEMU (the parity
# oracle for qtest-compat's --target qemu and --compare) and the qtest
# accelerator module Debian leaves out of it. Idempotent; installs with
# apt-get when something is missing (as root, as on CI and these machines).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed'; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: qemu-system-x86 is missing; run 'sudo apt-get install qemu-system-x86' (or make test as root)." >&2
    exit 1
  fi
  echo "test-deps: installing qemu-system-x86" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >&2
fi
"$here/build-qtest-accel.sh" > /dev/null
