"""Check boot variants against this host before booting anything.

Each check turns an impossible combination into one line saying what to do,
instead of a qemu failure twenty seconds into a run. Host capabilities come
from qemu itself (``-machine help``, ``-cpu help``: no guest is started).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool import GuestpoolError

TMPFS_CACHE = "/dev/shm/guestpool-boot-cache"
MIN_MEMSIZE_MB = 256


@dataclass(frozen=True)
class HostCaps:
    """What this host's qemu and hardware offer a boot variant."""

    accel: str  # the accelerator appliances use here: kvm or tcg
    machines: frozenset[str] = field(default_factory=frozenset)
    cpu_models: frozenset[str] = field(default_factory=frozenset)
    cores: int = 1
    memory_mb: int = 0


def _qemu_list(qemu: str, what: str) -> str:
    try:
        return subprocess.run([qemu, what, "help"], capture_output=True, text=True,
                              timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise GuestpoolError(f"cannot ask {qemu} for its {what[1:]} list: {e}") from None


def parse_machines(text: str) -> frozenset[str]:
    """Machine names (and aliases) from ``qemu -machine help``."""
    return frozenset(line.split()[0] for line in text.splitlines()[1:] if line.strip())


def parse_cpu_models(text: str) -> frozenset[str]:
    """CPU model names from ``qemu -cpu help`` (``x86 NAME  description``)."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "x86":
            names.add(parts[1])
        elif line.startswith("  ") and len(parts) == 1:  # "host", "max", "base" on some builds
            names.add(parts[0])
    return frozenset(names | {"host", "max", "base"})


def host_caps(accel: str) -> HostCaps:
    """Ask this host's qemu for its machines and CPU models."""
    from guestpool.appliance._accel import qemu_binary
    from guestpool.appliance._sizing import available_memory_mb

    qemu = qemu_binary()
    if qemu is None:
        raise GuestpoolError("no qemu-system binary found; run `bash pool/bootstrap.sh`")
    return HostCaps(accel, parse_machines(_qemu_list(qemu, "-machine")),
                    parse_cpu_models(_qemu_list(qemu, "-cpu")), os.cpu_count() or 1,
                    available_memory_mb())


def validate(name: str, settings: dict[str, Any], caps: HostCaps) -> list[str]:
    """Raise for an impossible variant; return warnings for a merely odd one.

    ``cachedir=tmpfs`` is resolved here to a folder under /dev/shm.
    """
    warnings: list[str] = []
    where = f"variant {name!r}"
    accel = settings.get("accel") or caps.accel
    if settings.get("accel") == "kvm" and caps.accel != "kvm":
        raise GuestpoolError(f"{where}: accel=kvm, but KVM does not work on this host "
                             "(see `guestpool doctor`); drop accel or use accel=tcg")
    machine = settings.get("machine")
    if machine:
        mtype = machine.split(",", 1)[0]
        if mtype.startswith("microvm"):
            raise GuestpoolError(
                f"{where}: machine={machine}: libguestfs's direct backend passes -no-hpet "
                "and PCI devices, which qemu's microvm rejects ('microvm-machine.hpet not "
                "found'); use machine=pc or machine=q35")
        if caps.machines and mtype not in caps.machines:
            raise GuestpoolError(f"{where}: qemu has no machine type {mtype!r}; "
                                 f"`qemu-system-{platform.machine()} -machine help` lists them")
    cpu = settings.get("cpu")
    if cpu:
        model = cpu.split(",", 1)[0]
        if model == "host" and accel != "kvm":
            raise GuestpoolError(f"{where}: cpu=host needs KVM and this run uses TCG; "
                                 "name a model (e.g. cpu=max or cpu=Haswell-v1)")
        if caps.cpu_models and model not in caps.cpu_models:
            raise GuestpoolError(f"{where}: qemu has no CPU model {model!r}; "
                                 f"`qemu-system-{platform.machine()} -cpu help` lists them")
    smp = settings.get("smp")
    if smp is not None:
        if smp < 1:
            raise GuestpoolError(f"{where}: smp must be at least 1, got {smp}")
        if smp > caps.cores:
            warnings.append(f"{where}: smp={smp} is more than this host's {caps.cores} cores"
                            + (": under TCG the vCPUs share them, expect a slower boot"
                               if accel == "tcg" else ""))
    memsize = settings.get("memsize")
    if memsize is not None:
        if memsize < MIN_MEMSIZE_MB:
            raise GuestpoolError(f"{where}: memsize={memsize} MiB is below the appliance's "
                                 f"minimum of {MIN_MEMSIZE_MB} MiB")
        if caps.memory_mb and memsize > caps.memory_mb:
            raise GuestpoolError(f"{where}: memsize={memsize} MiB is more than the "
                                 f"{caps.memory_mb} MiB this host has available")
    append = settings.get("append")
    if append is not None and ("\n" in append or '"' in append):
        raise GuestpoolError(f"{where}: append must be one line without double quotes")
    kernel = settings.get("kernel")
    if kernel:
        if not os.access(kernel, os.R_OK):
            raise GuestpoolError(f"{where}: kernel {kernel} does not exist or is not "
                                 "readable (supermin reads it as SUPERMIN_KERNEL)")
        modules = settings.get("modules") or _modules_for(kernel)
        if modules is None or not Path(modules).is_dir():
            raise GuestpoolError(f"{where}: no module folder for kernel {kernel}; add "
                                 "modules=/lib/modules/VERSION (SUPERMIN_MODULES)")
    elif settings.get("modules"):
        raise GuestpoolError(f"{where}: modules= goes with kernel=, set both")
    if settings.get("cachedir") == "tmpfs":
        if not Path("/dev/shm").is_dir():
            raise GuestpoolError(f"{where}: cachedir=tmpfs needs /dev/shm; name a folder")
        settings["cachedir"] = f"{TMPFS_CACHE}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
    if settings.get("cachedir"):
        try:
            Path(settings["cachedir"]).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GuestpoolError(f"{where}: cachedir {settings['cachedir']}: "
                                 f"{e.strerror}") from None
    return warnings


def _modules_for(kernel: str) -> str | None:
    """``/boot/vmlinuz-VERSION`` -> ``/lib/modules/VERSION``, as supermin guesses."""
    m = re.match(r"vmlinuz-(.+)$", Path(kernel).name)
    return f"/lib/modules/{m[1]}" if m else None


def host_facts(accel: str) -> dict[str, Any]:
    """Kernel, qemu, libguestfs, supermin, CPU and accelerator, saved with a run."""
    from guestpool.appliance._accel import qemu_binary

    def first_line(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=30).stdout.splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError, IndexError):
            return "unknown"

    try:
        import guestfs

        v = guestfs.GuestFS(python_return_dict=True).version()
        libguestfs = f"{v['major']}.{v['minor']}.{v['release']}{v['extra']}"
    except Exception:  # no bindings: still save the run
        libguestfs = "unknown"
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    qemu = qemu_binary()
    return {"host kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
            "accelerator": accel, "libguestfs": libguestfs,
            "qemu": first_line([qemu, "--version"]) if qemu else "none",
            "supermin": first_line(["supermin", "--version"])}
