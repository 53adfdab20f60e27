"""Facts about this host that size the pool."""

from __future__ import annotations

import os


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


#: Appliance memory: LUKS key derivation needs about 1 GB; 1024 MB measured enough.
DEFAULT_MEMSIZE_MB = 1024


def default_pool_size(memsize_mb: int = DEFAULT_MEMSIZE_MB) -> int:
    """One appliance per core (each TCG appliance keeps a core busy), bounded by
    free memory with room for qemu's overhead, at least one, at most 12 (virt-df's cap)."""
    cores = os.cpu_count() or 1
    avail_mb = available_memory_mb() or 4096
    by_memory = int(avail_mb * 0.8 // (memsize_mb + 256))
    return max(1, min(cores, by_memory, 12))
