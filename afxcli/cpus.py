"""How many CPU cores a step may use for its own threads (no heavy imports)."""
from __future__ import annotations

import os
import time

#: Linux's load file: its fourth field is ``runnable/total`` scheduling entities *now*.
LOADAVG_PATH = "/proc/loadavg"


def _runnable_others(path: str | None = None, reads: int = 3) -> int | None:
    """Threads other than the caller that are runnable now (the least of ``reads`` readings 1 ms
    apart, so a momentary kernel worker does not count), or None where the file is unavailable."""
    least = None
    for k in range(reads):
        try:
            with open(path or LOADAVG_PATH) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        least = running if least is None else min(least, running)
        if k + 1 < reads:
            time.sleep(0.001)
    return max(0, least - 1)   # the caller itself is running


def free_cores() -> int:
    """CPU cores not busy with other work, at least 1: the CPU count minus the threads of other
    work runnable *now* (Linux: ``/proc/loadavg``'s running count, less the caller), elsewhere
    minus the 1-minute load average (rounded). On a machine shared with other jobs, threads
    beyond this only add switching (measured: 2 render threads were 25 % slower than 1 at a load
    of 4 on 2 cores). The present count, not the average: in a batch of ``afx`` runs one after the
    other, the 1-minute average still counts the runs that have ended and kept every run to one
    core."""
    n = os.cpu_count() or 1
    others = _runnable_others()
    if others is not None:
        return max(1, min(n, n - others))
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return n
    return max(1, min(n, int(round(n - load + 0.5))))
