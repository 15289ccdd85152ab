#!/usr/bin/env bash
# Regenerates docs/img/*.svg from real runs: a coro9p server with
# --trace-hops, a scenario of requests (docs/tools/requests.py), then
# `coro9p trace-render`. Called by `make docs`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/target/release/coro9p"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run NAME FSDEV SCENARIO ONLY TITLE
run() {
  local name=$1 fsdev=$2 scenario=$3 only=$4 title=$5
  local sock="$work/$name.sock" trace="$work/$name.jsonl"
  "$bin" --fsdev "$fsdev" --listen "unix:$sock" --trace-hops "$trace" > /dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  python3 "$root/docs/tools/requests.py" "$sock" "$scenario" > /dev/null
  kill -TERM "$pid"
  wait "$pid"
  # Only the requests the picture is about (ONLY), not the set-up.
  "$bin" trace-render "$trace" -o "$root/docs/img/$name.svg" --title "$title" --only "$only"
  echo "docs/img/$name.svg"
}

mkdir -p "$work/export"
echo "hello from coro9p" > "$work/export/hello.txt"
run flush-success synth flush-success Twrite,Tflush \
  "Tflush of a blocked Twrite: the write is discarded, then Rflush"
run flush-ignored synth flush-ignored Twrite,Tflush \
  "Tflush too late: Rwrite first, then Rflush"
run tread "local,path=$work/export,security_model=passthrough" tread "" \
  "Tversion, Tattach, Twalk, Tlopen and Tread of a local file"
run concurrent "local,path=$work/export,security_model=passthrough" concurrent Tread,Tgetattr \
  "Three Treads and a Tgetattr in flight together"
