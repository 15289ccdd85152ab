#!/usr/bin/env python3
"""Where a request's time goes, from a coro9p --trace-hops file.

Usage: hop-phases.py TRACE.jsonl

For every task with exactly one hop, prints the median and p90 of:
  arrival   enter -> to_worker      (decode, fid lookup, submit the job)
  wake-w    to_worker -> job_start  (a worker thread wakes up and takes it)
  job       job_start -> job_end    (the syscalls themselves)
  wake-m    job_end -> to_main      (the main thread wakes up, resumes the task)
  reply     to_main -> finish       (encode, write the reply, free the PDU)
"""
import json
import sys
from collections import defaultdict


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round((len(v) - 1) * p)))] if v else float("nan")


def main(path):
    tasks = defaultdict(list)
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line cut short
            tasks[e["task"]].append(e)
    phases = defaultdict(list)
    for evs in tasks.values():
        t = {}
        hops = 0
        for e in evs:
            if e["event"] == "to_worker":
                hops += 1
            t.setdefault(e["event"], e["ns"])
        if hops != 1 or not all(k in t for k in ("enter", "to_worker", "job_start", "job_end", "to_main", "finish")):
            continue
        phases["arrival"].append(t["to_worker"] - t["enter"])
        phases["wake-w"].append(t["job_start"] - t["to_worker"])
        phases["job"].append(t["job_end"] - t["job_start"])
        phases["wake-m"].append(t["to_main"] - t["job_end"])
        phases["reply"].append(t["finish"] - t["to_main"])
        phases["hop (wake-w + job + wake-m)"].append(t["to_main"] - t["to_worker"])
    n = len(phases["job"])
    print(f"{n} one-hop requests; microseconds")
    print(f"{'phase':<30} {'median':>8} {'p90':>8}")
    for k in ("arrival", "wake-w", "job", "wake-m", "reply", "hop (wake-w + job + wake-m)"):
        v = phases[k]
        print(f"{k:<30} {pct(v, 0.5) / 1000:>8.1f} {pct(v, 0.9) / 1000:>8.1f}")


if __name__ == "__main__":
    main(sys.argv[1])
