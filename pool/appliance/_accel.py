"""Find out whether KVM really works, with a deadline, and remember the answer.

On some hosts ``/dev/kvm`` exists but qemu with ``accel=kvm`` hangs without a
word. We boot the host kernel under qemu with KVM and wait for its first
console line; no line before the deadline means KVM is unusable and guestpool
uses TCG. The verdict is cached, keyed by kernel, qemu binary and /dev/kvm, so
an upgrade re-probes. ``GUESTPOOL_ACCEL`` or ``--accel`` overrides it.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import select
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from guestpool._cache import build_lock, write_atomically
from guestpool._errors import SetupError
from guestpool._paths import cache_dir

Accel = Literal["kvm", "tcg"]
ACCEL_CHOICES = ("auto", "kvm", "tcg")
ENV_VAR = "GUESTPOOL_ACCEL"
PROBE_DEADLINE_S = 20.0


@dataclass(frozen=True)
class AccelVerdict:
    """Which accelerator appliances use, and how we know."""

    accel: Accel
    source: str  # "probe", "cache", "override", "no /dev/kvm"
    detail: str
    probe_seconds: float = 0.0


def qemu_binary() -> str | None:
    """The qemu that libguestfs's direct backend will run on this architecture."""
    arch = platform.machine()
    return shutil.which(f"qemu-system-{arch}") or shutil.which("qemu-kvm")


def _cache_key() -> str:
    qemu = qemu_binary() or "none"
    try:
        st = os.stat(qemu)
        qemu_id = f"{qemu}:{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        qemu_id = qemu
    return f"{platform.release()}|{qemu_id}|kvm={os.path.exists('/dev/kvm')}"


def _kernel() -> str | None:
    kernels = sorted(k for k in glob.glob("/boot/vmlinuz-*") if os.access(k, os.R_OK))
    return kernels[-1] if kernels else None


def probe_kvm(deadline: float = PROBE_DEADLINE_S) -> tuple[bool, str]:
    """Boot the host kernel with KVM and report whether it printed in time."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    qemu = qemu_binary()
    if qemu is None:
        return False, "qemu-system binary not found"
    kernel = _kernel()
    if kernel is None:
        return False, "no readable kernel under /boot to probe with"
    cmd = [qemu, "-accel", "kvm", "-nodefaults", "-display", "none", "-no-reboot", "-m", "256",
           "-serial", "stdio", "-kernel", kernel, "-append", "console=ttyS0 panic=-1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    end = time.monotonic() + deadline
    seen = b""
    try:
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return False, f"qemu with KVM exited early: {seen.decode(errors='replace')[-200:]}"
            seen += chunk
            if b"Linux version" in seen:
                return True, "host kernel started under KVM"
        return False, f"qemu with accel=kvm printed nothing in {deadline:.0f} s (KVM hangs here)"
    finally:
        proc.kill()
        proc.wait()


def resolve_accel(requested: str | None = None, *, refresh: bool = False) -> AccelVerdict:
    """The accelerator to use: explicit choice, else cached verdict, else probe."""
    choice = (requested or os.environ.get(ENV_VAR) or "auto").lower()
    if choice not in ACCEL_CHOICES:
        raise SetupError(f"unknown accelerator {choice!r}: use one of {', '.join(ACCEL_CHOICES)}")
    if choice != "auto":
        return AccelVerdict(choice, "override", f"set by {'--accel' if requested else ENV_VAR}")  # type: ignore[arg-type]
    path = cache_dir() / "accel.json"
    key = _cache_key()
    if not refresh and (cached := _cached_verdict(path, key)) is not None:
        return cached
    with build_lock(path):  # several processes starting at once probe once
        if not refresh and (cached := _cached_verdict(path, key)) is not None:
            return cached
        start = time.monotonic()
        ok, detail = probe_kvm()
        verdict = AccelVerdict("kvm" if ok else "tcg", "probe", detail, time.monotonic() - start)
        write_atomically(path, json.dumps({"key": key, "verdict": asdict(verdict)}).encode())
    return verdict


def _cached_verdict(path: Path, key: str) -> AccelVerdict | None:
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            v = cached["verdict"]
            return AccelVerdict(v["accel"], "cache", v["detail"], v["probe_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None
