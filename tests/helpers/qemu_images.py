"""Images in every format this machine's ``qemu-img`` writes, for the format-header tests.

Each case names the format guestpool must report when the image is declared raw.
cloop cannot be created by ``qemu-img``; its case writes the v2.0 header qemu's
``cloop_probe`` looks for, so the signature is still tested.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU_IMG_TIMEOUT_S = 60.0
CLOOP_V2_HEADER = (b"#!/bin/sh\n#V2.0 Format\n"
                   b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def qemu_img(*args: str) -> None:
    """Run ``qemu-img``; fail with its stderr, never hang."""
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                          timeout=QEMU_IMG_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)}: {proc.stderr.strip()}")


def supported_formats() -> set[str]:
    """Formats listed by ``qemu-img --help`` ("Supported formats: ...")."""
    out = subprocess.run(["qemu-img", "--help"], capture_output=True, text=True,
                         timeout=QEMU_IMG_TIMEOUT_S).stdout
    found = re.search(r"Supported formats:(.*)", out)
    return set(found.group(1).split()) if found else set()


@dataclass(frozen=True)
class FormatCase:
    id: str
    #: ``qemu-img create -f`` driver.
    driver: str
    #: Extra ``qemu-img create`` arguments (subformat, secrets).
    args: tuple[str, ...] = ()
    #: The format guestpool must name for this image.
    detected: str = ""

    @property
    def expected(self) -> str:
        return self.detected or self.driver


LUKS_ARGS = ("--object", "secret,id=sec0,data=guestpool-test",
             "-o", "key-secret=sec0,iter-time=10")

CASES = (
    FormatCase("qcow2", "qcow2"),
    FormatCase("qcow-v1", "qcow"),
    FormatCase("qed", "qed"),
    FormatCase("vmdk-monolithicSparse", "vmdk", ("-o", "subformat=monolithicSparse")),
    FormatCase("vmdk-streamOptimized", "vmdk", ("-o", "subformat=streamOptimized")),
    FormatCase("vmdk-monolithicFlat-descriptor", "vmdk", ("-o", "subformat=monolithicFlat")),
    FormatCase("vpc-dynamic", "vpc", ("-o", "subformat=dynamic")),
    FormatCase("vpc-fixed-footer-only", "vpc", ("-o", "subformat=fixed")),
    FormatCase("vhdx", "vhdx"),
    FormatCase("vdi", "vdi"),
    FormatCase("parallels", "parallels"),
    FormatCase("luks", "luks", LUKS_ARGS),
    FormatCase("cloop-handmade", "cloop"),
)


def make_image(case: FormatCase, folder: Path, size: str = "4M") -> Path:
    """Write ``case``'s image in ``folder``; raises LookupError if this qemu-img cannot."""
    path = folder / f"{case.id}.img"
    if case.driver == "cloop":
        path.write_bytes(CLOOP_V2_HEADER.ljust(4096, b"\0"))
        return path
    if case.driver not in supported_formats():
        raise LookupError(f"qemu-img here does not list the {case.driver} format")
    attempts = 6 if case.driver == "luks" else 1
    for attempt in range(attempts):
        try:
            qemu_img("create", "-q", "-f", case.driver, *case.args, str(path), size)
            return path
        except RuntimeError as e:
            if "does not support image creation" in str(e):
                raise LookupError(str(e)) from None
            # LUKS's PBKDF benchmark fails now and then on a loaded machine
            # ("Unable to get accurate CPU usage"): try again
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")
