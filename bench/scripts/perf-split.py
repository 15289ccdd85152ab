#!/usr/bin/env python3
"""Splits a `perf record -g` profile of coro9p by thread and by what the
time was spent on.

Usage: perf script -i perf.data | perf-split.py

Each sample goes to its thread group (main, worker) and to the first
category whose marker appears in its call stack (innermost frame first):
  wake/sleep   futex, scheduler, epoll_wait, eventfd: thread hand-offs
  socket       TCP send/receive on the client connection
  fs syscalls  openat, fstatat, fcntl, close, pread, pwrite, getdents, ...
  copy/zero    memcpy/memset in user space
  malloc       the allocator
  user         everything else in user space (coro9p's own code)
"""
import sys
from collections import Counter, defaultdict

CATS = [
    ("wake/sleep", ("futex", "schedule", "finish_task_switch", "try_to_wake_up",
                    "ep_poll", "do_epoll_wait", "eventfd", "wake_up")),
    ("socket", ("tcp_", "sock_", "inet_", "__sys_sendto", "__sys_recvfrom", "ip_", "net_rx", "__dev_queue_xmit")),
    ("fs syscalls", ("openat", "fstatat", "statx", "vfs_", "do_filp_open", "path_", "link_path_walk",
                     "__x64_sys_close", "fcntl", "shmem_", "pread", "pwrite", "getdents", "iterate_dir",
                     "filemap_", "unlinkat", "fchown", "fchmod", "statfs", "dput", "d_lookup", "lseek")),
    ("copy/zero", ("memcpy", "memmove", "memset")),
    ("malloc", ("malloc", "_int_free", "cfree", "free", "realloc", "calloc", "__rdl_", "__rust_alloc",
                "__rust_dealloc")),
]


def category(frames):
    for f in frames:
        for name, markers in CATS:
            if any(m in f for m in markers):
                return name
    if frames and frames[0].startswith("[k]"):
        return "other kernel"
    return "user"


def main():
    counts = defaultdict(Counter)
    frames, comm = [], None
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                group = "worker" if "worker" in comm else "main"
                counts[group][category(frames)] += 1
            frames, comm = [], None
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.split(None, 1)
        if len(parts) == 2:
            sym = parts[1]
            kernel = "[kernel.kallsyms]" in sym
            frames.append(("[k]" if kernel else "") + sym.split(" (")[0])
    total = sum(sum(c.values()) for c in counts.values())
    print(f"{total} samples")
    for group in ("main", "worker"):
        c = counts[group]
        n = sum(c.values())
        if not n:
            continue
        print(f"{group}: {100 * n / total:.0f}% of samples")
        for cat, k in c.most_common():
            print(f"  {cat:<14} {100 * k / n:5.1f}%")


if __name__ == "__main__":
    main()
