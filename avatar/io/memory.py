"""Peak resident memory of this process, in MiB.

`resource.getrusage(RUSAGE_SELF).ru_maxrss` is NOT this process's own peak on Linux: the kernel
keeps the high-water mark across fork and execve, so a child started from a large parent (a
pytest session, a bench driver) reports the parent's peak at the time of the fork. The own peak of
the current address space is `VmHWM` in /proc/self/status (reset by execve); that is what
`peak_rss_mb` reads, falling back to ru_maxrss where /proc is absent (macOS, where ru_maxrss is in
bytes).
"""
from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set since its last execve, MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0          # kB -> MiB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024.0
