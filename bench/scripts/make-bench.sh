#!/usr/bin/env bash
# The 9P half of `make bench` (the Makefile runs the runtime
# micro-benchmarks first, into docs/perf/runtime.txt).
#
# Builds coro9p and coro9p-bench (release), mounts a tmpfs in a temporary
# directory, builds the export there (a 10,000-file tree, a 10,000-entry
# directory, a 256 MiB file), and runs `coro9p-bench suite`: memory figures
# on fresh servers, then every workload on coro9p and diod (Debian's
# package, 9P2000.L, no authentication, aname = the export) and the direct
# syscall loops, alternately, RUNS rounds. Medians go to stdout and to
# docs/perf/ (results.md, runs.csv, chart.svg). The tmpfs is unmounted at
# the end, failure or not.
#
# Needs root (tmpfs, passthrough ownership, /proc/PID/clear_refs). Knobs:
# RUNS (5), SECS per server run (2), DIRECT_SECS (1), IDLE connections
# (1000), OUT (docs/perf), ONLY=meta,seqread (a subset).
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
out=${OUT:-$root/docs/perf}

if [ "$(id -u)" -ne 0 ]; then
    echo "make-bench: run as root (it mounts a tmpfs and serves it with security_model=passthrough)" >&2
    exit 1
fi
diod=$(command -v diod || true)
if [ -z "$diod" ] && [ -x /usr/sbin/diod ]; then diod=/usr/sbin/diod; fi
if [ -z "$diod" ]; then
    echo "make-bench: diod is missing: apt-get install diod" >&2
    exit 1
fi

$cargo build --release -p coro9p -p coro9p-bench

work=$(mktemp -d /tmp/coro9p-bench.XXXXXX)
cleanup() {
    rc=$?
    if [ "$rc" -ne 0 ]; then
        for f in "$work"/logs/*.log; do
            [ -f "$f" ] && { echo "--- last lines of $(basename "$f"):"; tail -n 20 "$f"; } >&2
        done
    fi
    if mountpoint -q "$work/export"; then
        umount "$work/export" 2>/dev/null || umount -l "$work/export"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/export" "$work/logs" "$out"
mount -t tmpfs -o size=2g,mode=0755 coro9p-bench "$work/export"
# 1,000 idle connections need descriptors, in the servers and the client.
ulimit -n "$(ulimit -Hn)"

bench=$target/release/coro9p-bench
"$bench" prepare "$work/export"
"$bench" suite \
    --export "$work/export" \
    --coro9p-bin "$target/release/coro9p" \
    --diod-bin "$diod" \
    --runs "${RUNS:-5}" \
    --secs "${SECS:-2}" \
    --direct-secs "${DIRECT_SECS:-1}" \
    --idle "${IDLE:-1000}" \
    --out "$out" \
    --runtime-bench "$out/runtime.txt" \
    --logs "$work/logs" \
    --command "make bench" \
    ${ONLY:+--only "$ONLY"}
