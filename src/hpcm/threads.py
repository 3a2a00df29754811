"""CPU thread settings of the command line (no torch import here: it must run before torch loads).

Two things made a busy machine slow (issue 17): OpenMP worker threads that *spin* while waiting at
a barrier (GNU libgomp's default), which on a core shared with another process burn their whole time
slice while the thread they wait for is descheduled (a 768x512 encode went from 0.4 s to 7 s with
2 threads on 2 busy cores); and thread counts above the cores this process may use.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def passive_openmp_waits() -> None:
    """Make idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) unless the user
    chose a policy. Takes effect only if called before torch (its OpenMP runtime) is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
