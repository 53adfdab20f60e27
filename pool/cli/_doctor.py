"""`guestpool doctor`: can guestpool work on this host, and how fast?"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestpool._errors import SetupError
from guestpool.appliance._accel import qemu_binary, resolve_accel
from guestpool.appliance._sizing import DEFAULT_MEMSIZE_MB, available_memory_mb, default_pool_size


@dataclass
class Check:
    name: str
    ok: bool
    value: str


def run_checks(accel: str | None = None, refresh: bool = False) -> list[Check]:
    checks: list[Check] = []
    try:
        import guestfs

        g = guestfs.GuestFS(python_return_dict=True)
        v = g.version()
        g.close()
        checks.append(Check("libguestfs bindings", True, f"importable, libguestfs "
                            f"{v['major']}.{v['minor']}.{v['release']}"))
    except ImportError:
        checks.append(Check("libguestfs bindings", False,
                            "not importable: run `bash pool/bootstrap.sh` (Debian: "
                            "python3-guestfs)"))
    qemu = qemu_binary()
    if qemu:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
        checks.append(Check("qemu", True, out.splitlines()[0] if out else qemu))
    else:
        checks.append(Check("qemu", False, "qemu-system not found (Debian: qemu-system-x86)"))
    cache = Path(os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp")) / f".guestfs-{os.getuid()}"
    built = (cache / "appliance.d" / "kernel").exists()
    checks.append(Check("supermin appliance", True,
                        f"cached in {cache}/appliance.d" if built else
                        "not built yet: the first boot builds it (about 30 s)"))
    checks.append(Check("cores", True, str(os.cpu_count())))
    avail = available_memory_mb()
    checks.append(Check("free memory", avail > 1500, f"{avail} MiB available"))
    checks.append(Check("recommended pool size", True,
                        f"{default_pool_size()} appliances of {DEFAULT_MEMSIZE_MB} MiB"))
    try:
        verdict = resolve_accel(accel, refresh=refresh)
        how = {"probe": f"probed in {verdict.probe_seconds:.1f} s", "cache": "cached verdict",
               "override": "override"}.get(verdict.source, verdict.source)
        checks.append(Check("accelerator", True,
                            f"{verdict.accel.upper()} ({how}: {verdict.detail})"))
    except SetupError as e:
        checks.append(Check("accelerator", False, str(e)))
    return checks


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks),
            "checks": {c.name: {"ok": c.ok, "value": c.value} for c in checks}}
