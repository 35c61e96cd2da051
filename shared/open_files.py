"""The process's open-files limit, which bounds how many connections (idle sockets too) it can hold."""

from __future__ import annotations

import resource
import sys


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted`, never past the hard limit; returns the soft limit.

    Many systems start processes with a soft limit of 1,024 open files under a hard limit of many times
    that: a gevent worker holding more sockets then fails with EMFILE ("Too many open files"). Only the
    hard limit needs root (or the container runtime, `ulimit -Hn`, systemd's LimitNOFILE) to raise.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < wanted:
        print(f"open files limited to {soft} (hard limit), fewer than the {wanted} wanted", file=sys.stderr)
    return soft
