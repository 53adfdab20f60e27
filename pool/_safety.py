"""Image safety checks, made on the host before any disk reaches qemu.

- The declared format must match the image's own magic: a raw-declared file
  that starts with a qcow2 (or other image format) header is refused unless
  the user allows it, because qemu would otherwise read it as raw and a guest
  could have planted that header to be reinterpreted elsewhere.
- A qcow2's backing chain is read with ``qemu-img info --backing-chain`` and
  every backing file must resolve inside the allowed roots, name its format
  (no probing), and the chain must be short.
- Paths are resolved (symlinks) first; device nodes, FIFOs and sockets are
  refused; virtual size is bounded.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import ImageError
from ._fleet import VM, Disk

# Magic numbers of image formats that must never be read as raw.
FORMAT_MAGICS: dict[bytes, str] = {
    b"QFI\xfb": "qcow2", b"QED\x00": "qed", b"KDMV": "vmdk", b"# Disk DescriptorFile": "vmdk",
    b"conectix": "vpc", b"vhdxfile": "vhdx", b"<<< Oracle VM VirtualBox Disk Image >>>": "vdi",
    b"cloop": "cloop", b"\x00\x00\x00\x00\x00\x00\x00\x00WithoutFreeSpace": "parallels",
}
DEFAULT_BASE_DIRS = ("/var/lib/nova/instances/_base", "/var/lib/libvirt/images")
QEMU_IMG_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SafetyPolicy:
    """What guestpool accepts before attaching a disk."""

    #: Folders backing files may live in, besides each image's own folder tree.
    allowed_roots: Sequence[str] = field(default_factory=lambda: list(DEFAULT_BASE_DIRS))
    #: Accept a raw-declared image that carries another format's header.
    allow_format_mismatch: bool = False
    max_chain: int = 8
    max_virtual_size: int = 16 * 1024**4


def _magic(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(64)
    for magic, name in FORMAT_MAGICS.items():
        if head.startswith(magic):
            return name
    return None


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(os.path.commonpath([path, r]) == r for r in roots)


def resolve_image(path: str) -> str:
    """The image's real path, refused unless it is a non-empty regular file."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise ImageError(f"image {path} does not exist") from None
    except OSError as e:
        raise ImageError(f"image {path} cannot be read: {e.strerror}") from None
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        raise ImageError(f"image {path} is a device node; refusing it")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"image {path} is not a regular file (FIFO, socket or folder)")
    if st.st_size == 0:
        raise ImageError(f"image {path} is empty (0 bytes)")
    return real


def check_disk(disk: Disk, policy: SafetyPolicy, live: bool = False) -> Disk:
    """Check one disk; return it with its path resolved. Raises ImageError."""
    real = resolve_image(disk.path)
    found = _magic(real)
    if disk.format == "raw" and found is not None and not policy.allow_format_mismatch:
        raise ImageError(f"image {disk.path} is declared raw but starts with a {found} header; "
                         "refusing it (allow format mismatches explicitly if this is intended)")
    if disk.format == "qcow2":
        if found != "qcow2":
            raise ImageError(f"image {disk.path} is declared qcow2 but has no qcow2 header")
        _check_qcow2_tables(real)
        _check_chain(real, policy, live)
    return Disk(real, disk.format)


def _check_qcow2_tables(real: str) -> None:
    """Refuse a qcow2 whose L1 or refcount table lies past the end of the file."""
    with open(real, "rb") as f:
        head = f.read(72)
        size = os.fstat(f.fileno()).st_size
    if len(head) < 72:
        raise ImageError(f"image {real} is truncated inside its qcow2 header")
    cluster_bits, l1_size = struct.unpack(">I", head[20:24])[0], struct.unpack(">I", head[36:40])[0]
    l1_offset, rc_offset = struct.unpack(">Q", head[40:48])[0], struct.unpack(">Q", head[48:56])[0]
    rc_clusters = struct.unpack(">I", head[56:60])[0]
    if not 9 <= cluster_bits <= 21:
        raise ImageError(f"image {real} has an invalid qcow2 cluster size")
    ends = (l1_offset + 8 * l1_size, rc_offset + (rc_clusters << cluster_bits))
    if max(ends) > size:
        raise ImageError(f"image {real} is truncated: its qcow2 tables end at byte {max(ends)}"
                         f" but the file has {size} bytes")


def _check_chain(real: str, policy: SafetyPolicy, live: bool) -> None:
    cmd = ["qemu-img", "info", "--backing-chain", "--output=json", "-f", "qcow2", real]
    if live:
        cmd.insert(2, "-U")  # a running VM's qemu holds the lock: read without taking it
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ImageError(f"qemu-img info on {real} took over {QEMU_IMG_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
        raise ImageError(f"image {real} is not a readable qcow2: {msg[:300]}")
    try:
        chain = json.loads(proc.stdout)
    except ValueError:
        raise ImageError(f"qemu-img info on {real} gave unreadable output") from None
    if len(chain) - 1 > policy.max_chain:
        raise ImageError(f"image {real} has a backing chain of {len(chain) - 1} files, "
                         f"over the limit of {policy.max_chain}")
    roots = [os.path.realpath(r) for r in (str(Path(real).parent), *policy.allowed_roots)]
    for layer in chain:
        if layer.get("virtual-size", 0) > policy.max_virtual_size:
            raise ImageError(f"image {layer.get('filename')} claims a virtual size of "
                             f"{layer['virtual-size']} bytes, over the limit")
        backing = layer.get("full-backing-filename") or layer.get("backing-filename")
        if not backing:
            continue
        if not layer.get("backing-filename-format"):
            raise ImageError(f"image {layer.get('filename')} names backing file {backing} "
                             "without its format; guestpool never lets qemu probe a format")
        resolved = os.path.realpath(backing)
        if not _inside(resolved, roots):
            raise ImageError(f"image {layer.get('filename')} has backing file {backing} outside "
                             f"the allowed folders ({', '.join(roots)}); refusing it")
        resolve_image(resolved)


def check_vm(vm: VM, policy: SafetyPolicy) -> VM:
    """Every disk of ``vm`` checked; the VM with resolved paths."""
    import dataclasses

    disks = tuple(check_disk(d, policy, vm.live) for d in vm.disks)
    return dataclasses.replace(vm, disks=disks)
