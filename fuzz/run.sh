#!/usr/bin/env bash
# `make fuzz`: each target for FUZZ_SECONDS (default 60) with libFuzzer
# through cargo-fuzz, on the corpus kept in tests/fuzz/corpus/<target>; a
# crash is written to tests/fuzz/artifacts/<target>/ and becomes a
# regression input that `make test` replays (tests/fuzz_regressions.rs).
# cargo-fuzz needs nightly features: the stable toolchain is told to allow
# them (RUSTC_BOOTSTRAP), as no other toolchain can be installed here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
cd "$root/fuzz"
status=0
for t in decode session_synth session_local ffi; do
  corpus="$root/tests/fuzz/corpus/$t"
  artifacts="$root/tests/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz: $t for ${secs}s"
  cargo fuzz run -O "$t" "$corpus" -- -max_total_time="$secs" -artifact_prefix="$artifacts/" \
    -max_len=4096 || status=1
done
exit $status
