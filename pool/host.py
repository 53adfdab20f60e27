"""Facts about this host that size the pool."""

from __future__ import annotations


def available_memory_mb() -> int:
    """MemAvailable from /proc/meminfo, in MiB (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0
