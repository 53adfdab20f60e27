"""Image safety checks, made on the host before any disk reaches qemu.

- The declared format must match the image's own magic: a raw-declared file
  that starts with a qcow2 (or other image format) header is refused unless
  the user allows it, because qemu would otherwise read it as raw and a guest
  could have planted that header to be reinterpreted elsewhere. The signatures
  are those qemu's block drivers probe for (``*_probe`` in ``block/``), and a
  VHD's footer too, since a fixed VHD has no header.
- A qcow2's backing chain is read with ``qemu-img info --backing-chain``: every
  backing file and every qcow2 external data file must be an absolute path that
  resolves inside the allowed roots to a regular file; backing files name their
  format (no probing), raw or qcow2 only; the chain is short.
- Paths are resolved (symlinks) first; folders, device nodes, FIFOs and sockets
  are refused without being opened; virtual size is bounded.
- With ``SafetyPolicy.disk_roots`` set, the disk itself is confined too: see
  :func:`confine` and :func:`check_disk`.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool._errors import ImageError
from guestpool.inspectors._specs import LuksKey

from ._model import VM, Disk
from ._schema import FORMATS


@dataclass(frozen=True)
class Signature:
    """Bytes at ``offset`` that make qemu's format probe name ``format``."""

    offset: int
    magic: bytes
    format: str


# Headers of image formats that must never be read as raw, first match wins.
FORMAT_MAGICS: tuple[Signature, ...] = (
    Signature(0, b"QFI\xfb\x00\x00\x00\x01", "qcow"),  # qcow_probe: version 1
    Signature(0, b"QFI\xfb", "qcow2"),  # qcow2_probe: version >= 2
    Signature(0, b"QED\x00", "qed"),
    Signature(0, b"KDMV", "vmdk"),  # VMDK4 sparse and streamOptimized
    Signature(0, b"COWD", "vmdk"),  # VMDK3
    Signature(0, b"conectix", "vpc"),
    Signature(0, b"vhdxfile", "vhdx"),
    Signature(0x40, struct.pack("<I", 0xBEDA107F), "vdi"),  # the text before it varies
    Signature(0, b"WithoutFreeSpace", "parallels"),
    Signature(0, b"WithouFreSpacExt", "parallels"),
    Signature(0, b"LUKS\xba\xbe", "luks"),
    Signature(0, b"#!/bin/sh\n#V2.0 Format\n"
              b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n", "cloop"),
    Signature(0, b"Bochs Virtual HD Image\x00", "bochs"),
)
# vmdk_probe also takes a text descriptor: comment and blank lines, then version=1|2|3.
VMDK_DESCRIPTOR = re.compile(rb"(?:#[^\n]*\n|[ ]*\r?\n)*version=[123]\r?\n")
# A fixed VHD is raw data plus a 512-byte footer starting with the cookie "conectix".
VPC_FOOTER_BYTES = 512
HEAD_BYTES = 2048  # qemu probes formats on the first 2 KiB
DEFAULT_BASE_DIRS = ("/var/lib/nova/instances/_base", "/var/lib/libvirt/images")
QEMU_IMG_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SafetyPolicy:
    """What guestpool accepts before attaching a disk."""

    #: Folders backing and data files may live in, besides each image's own
    #: folder tree. Used only while ``disk_roots`` is None.
    allowed_roots: Sequence[str] = field(default_factory=lambda: list(DEFAULT_BASE_DIRS))
    #: Accept a raw-declared image that carries another format's header.
    allow_format_mismatch: bool = False
    max_chain: int = 8
    max_virtual_size: int = 16 * 1024**4
    #: The only folders a disk, its backing files and its data files may resolve
    #: into (the source's folders). None: the disk itself is not confined.
    disk_roots: Sequence[str] | None = None
    #: With ``disk_roots``: folders every VM may reach (Nova's ``_base``). A VM
    #: with a ``home`` folder is confined to it and these, never to another
    #: VM's folder.
    shared_roots: Sequence[str] = ()
    #: Every disk of the fleet (resolved path -> its VM and trust group,
    #: :func:`disk_owners`): no file of a VM's disks (the disk, a backing or data
    #: file) may be the disk of a VM of another trust group.
    fleet_disks: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: Set by :func:`check_vm` for a VM with a ``home``: taken as it is (resolved
    #: by its source), never through symlinks, beside ``disk_roots``.
    home: str | None = None


@dataclass(frozen=True)
class ChainFile:
    """A file a disk needs (the disk, a backing file, a qcow2 data file), as the
    checks found it: ``stat`` is taken before any byte of it was read."""

    path: str
    #: "raw" or "qcow2" ("raw" for a data file: guest data, no header)
    format: str
    #: "disk", "backing" or "data"
    role: str
    stat: os.stat_result


#: Collects the files :func:`check_vm` visited, in order (see :class:`ChainFile`).
ChainFiles = list[ChainFile]


@dataclass(frozen=True)
class _Opened:
    head: bytes
    footer: bytes
    size: int
    stat: os.stat_result


def _magic(head: bytes, footer: bytes = b"") -> str | None:
    """The format qemu (or a VHD reader, for the footer) would see in these bytes."""
    for sig in FORMAT_MAGICS:
        if head[sig.offset:sig.offset + len(sig.magic)] == sig.magic:
            return sig.format
    if VMDK_DESCRIPTOR.match(head):
        return "vmdk"
    if footer.startswith(b"conectix"):
        return "vpc"
    return None


def _where(found: str, opened: _Opened) -> str:
    """How the image carries ``found``'s signature, for error messages."""
    if found == "vpc" and not opened.head.startswith(b"conectix"):
        return "ends with a vpc footer"
    return f"starts with a {found} header"


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(os.path.commonpath([path, r]) == r for r in roots)


def _kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device node"),
                       (stat.S_ISBLK, "block device node")):
        if test(mode):
            return name
    return "special file"


def _shown(path: str, real: str) -> str:
    return path if path == real else f"{path} (resolves to {real})"


def _stat_regular(path: str, real: str, what: str) -> os.stat_result:
    """``real``'s stat, refused unless it is a regular file (checked without opening it)."""
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise ImageError(f"{what} {_shown(path, real)} does not exist") from None
    except OSError as e:
        raise ImageError(f"{what} {_shown(path, real)} cannot be read: {e.strerror}") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise ImageError(f"{what} {_shown(path, real)} is a {kind}, not a regular file; "
                         "refusing it")
    if st.st_size == 0:
        raise ImageError(f"{what} {_shown(path, real)} is empty (0 bytes)")
    return st


def resolve_image(path: str) -> str:
    """The image's real path, refused unless it is a non-empty regular file."""
    real = os.path.realpath(path)
    _stat_regular(path, real, "image")
    return real


def confine(path: str, roots: Sequence[str], home: str | None = None) -> str:
    """``path`` with symlinks resolved; ImageError unless it lies inside one of ``roots``
    or ``home``.

    The roots are resolved as well, so a root named through a symlink still
    matches; ``..`` is resolved before the check, and no roots allow nothing.
    ``home`` is taken as it is: a symlink there must not move a VM's own place.
    """
    real = os.path.realpath(path)
    real_roots = _resolved(roots, home)
    if not _inside(real, real_roots):
        raise ImageError(f"image {path} resolves to {real}, outside the allowed folders "
                         f"({', '.join(real_roots) or 'none given'}); refusing it "
                         "(a scan can allow another folder with --allow-path)")
    return real


def _open_image(path: str, real: str) -> _Opened:
    """The head and VHD footer of a regular file, opened so that a FIFO never blocks."""
    before = _stat_regular(path, real, "image")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"image {_shown(path, real)} cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) or _kind(st.st_mode):
            raise ImageError(f"image {_shown(path, real)} changed while being checked; "
                             "refusing it")
        head = os.pread(fd, HEAD_BYTES, 0)
        footer = (os.pread(fd, VPC_FOOTER_BYTES, st.st_size - VPC_FOOTER_BYTES)
                  if st.st_size >= VPC_FOOTER_BYTES else b"")
    finally:
        os.close(fd)
    return _Opened(head, footer, st.st_size, st)


def check_disk(disk: Disk, policy: SafetyPolicy, live: bool = False,
               files: ChainFiles | None = None) -> Disk:
    """Check one disk; return it with its path resolved. Raises ImageError.
    ``files``, if given, gets every file the disk needs (see :class:`ChainFile`).

    With ``policy.disk_roots`` set, the disk must resolve inside those roots,
    and so must its backing files and qcow2 data files: the image's own folder
    and ``allowed_roots`` (with its default ``DEFAULT_BASE_DIRS``) are then not
    consulted, so an image cannot reach a folder the source did not name, such
    as another source's disks in ``/var/lib/libvirt/images``. A source with a
    shared base folder (Nova's ``_base``) lists it in ``disk_roots``. Without
    ``disk_roots``, backing and data files may live in the image's own folder
    tree or ``allowed_roots``, as before.
    """
    if policy.disk_roots is not None:
        real = confine(disk.path, policy.disk_roots, policy.home)
    else:
        real = os.path.realpath(disk.path)
    opened = _open_image(disk.path, real)
    mine: ChainFiles = [ChainFile(real, disk.format, "disk", opened.stat)]
    found = _magic(opened.head, opened.footer)
    if disk.format == "raw" and found is not None and not policy.allow_format_mismatch:
        raise ImageError(f"image {disk.path} is declared raw but {_where(found, opened)}; "
                         "refusing it (allow format mismatches explicitly if this is intended)")
    if disk.format == "qcow2":
        if found != "qcow2":
            seen = f" (it has a {found} header)" if found else ""
            raise ImageError(f"image {disk.path} is declared qcow2 but has no qcow2 header{seen}")
        _check_qcow2_tables(real, opened)
        _check_chain(real, policy, live, mine)
    if files is not None:
        files.extend(mine)
    return Disk(real, disk.format)


def _check_qcow2_tables(real: str, opened: _Opened) -> None:
    """Refuse a qcow2 whose L1 or refcount table lies past the end of the file."""
    size = opened.size
    if len(opened.head) < 72:
        raise ImageError(f"image {real} is truncated inside its qcow2 header")
    cluster_bits, l1_size, l1_offset = qcow2_layout(opened.head)
    rc_offset = struct.unpack(">Q", opened.head[48:56])[0]
    rc_clusters = struct.unpack(">I", opened.head[56:60])[0]
    if not 9 <= cluster_bits <= 21:
        raise ImageError(f"image {real} has an invalid qcow2 cluster size")
    ends = (l1_offset + 8 * l1_size, rc_offset + (rc_clusters << cluster_bits))
    if max(ends) > size:
        raise ImageError(f"image {real} is truncated: its qcow2 tables end at byte {max(ends)}"
                         f" but the file has {size} bytes")


def qcow2_layout(head: bytes) -> tuple[int, int, int]:
    """(cluster bits, L1 entries, L1 offset) from a qcow2 header of 72 bytes or more."""
    return (struct.unpack(">I", head[20:24])[0], struct.unpack(">I", head[36:40])[0],
            struct.unpack(">Q", head[40:48])[0])


def _chain_roots(real: str, policy: SafetyPolicy) -> list[str]:
    """Where a disk's backing and data files may live (see :func:`check_disk`)."""
    if policy.disk_roots is not None:
        return _resolved(policy.disk_roots, policy.home)
    return _resolved((str(Path(real).parent), *policy.allowed_roots))


def _resolved(roots: Sequence[str], home: str | None = None) -> list[str]:
    return [*(os.path.realpath(r) for r in roots), *([home] if home else [])]


def _check_chain(real: str, policy: SafetyPolicy, live: bool, files: ChainFiles) -> None:
    """Follow the backing chain one layer at a time, each backing file checked
    before ``qemu-img`` opens it (``--backing-chain`` would open a FIFO and block);
    every backing and data file is appended to ``files``."""
    roots = _chain_roots(real, policy)
    seen = {real}
    layer = _qemu_img_info(real, "qcow2", live)
    for followed in range(1, policy.max_chain + 2):
        if layer.get("virtual-size", 0) > policy.max_virtual_size:
            raise ImageError(f"image {layer.get('filename')} claims a virtual size of "
                             f"{layer['virtual-size']} bytes, over the limit")
        data = _check_data_file(layer, roots)
        if data is not None:
            files.append(ChainFile(data[0], "raw", "data", data[1]))
        backing = _checked_backing(layer, roots)
        if backing is None:
            return
        if followed > policy.max_chain:
            raise ImageError(f"image {real} has a backing chain of more than "
                             f"{policy.max_chain} files, over the limit; refusing it")
        path, fmt, st = backing
        if path in seen:
            raise ImageError(f"image {real} has a backing chain that comes back to {path} "
                             "(an infinite loop); refusing it")
        seen.add(path)
        files.append(ChainFile(path, fmt, "backing", st))
        if fmt == "raw":
            _check_raw_backing(path, policy)
            return
        layer = _qemu_img_info(path, fmt, live)


def _qemu_img_info(path: str, fmt: str, live: bool) -> dict[str, Any]:
    """``qemu-img info`` of one layer; it opens neither backing nor data files."""
    cmd = ["qemu-img", "info", "--output=json", "-f", fmt, path]
    if live:
        cmd.insert(2, "-U")  # a running VM's qemu holds the lock: read without taking it
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ImageError(f"qemu-img info on {path} took over {QEMU_IMG_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
        msg = msg.removeprefix("qemu-img: ")
        raise ImageError(f"image {path} is not a readable {fmt}: {msg[:300]}")
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise ImageError(f"qemu-img info on {path} gave unreadable output")
    return info


def _check_raw_backing(path: str, policy: SafetyPolicy) -> None:
    """A raw backing file is held to the rules of a raw disk: no other format's header."""
    opened = _open_image(path, path)
    found = _magic(opened.head, opened.footer)
    if found is not None and not policy.allow_format_mismatch:
        raise ImageError(f"backing file {path} is declared raw but {_where(found, opened)}; "
                         "refusing it (allow format mismatches explicitly if this is intended)")
    if opened.size > policy.max_virtual_size:
        raise ImageError(f"backing file {path} has {opened.size} bytes, over the limit")


def _outside(roots: Sequence[str]) -> str:
    return f"outside the allowed folders ({', '.join(roots) or 'none given'}); refusing it"


def _checked_backing(layer: dict[str, Any], roots: Sequence[str]
                     ) -> tuple[str, str, os.stat_result] | None:
    """The layer's backing file (real path, format, stat), refused unless it is an
    absolute path into the roots to a regular file, raw or qcow2, format named."""
    owner = layer.get("filename")
    backing = layer.get("full-backing-filename") or layer.get("backing-filename")
    if not backing:
        return None
    fmt = layer.get("backing-filename-format")
    if not fmt:
        raise ImageError(f"image {owner} names backing file {backing} "
                         "without its format; guestpool never lets qemu probe a format")
    if not os.path.isabs(backing):
        raise ImageError(f"image {owner} names backing file {backing!r}, not an absolute file "
                         "path (qemu reads json:, nbd: and other such names as protocols); "
                         "refusing it")
    if fmt not in FORMATS:
        raise ImageError(f"image {owner} has backing file {backing} in format {fmt}; guestpool "
                         f"accepts only {' or '.join(FORMATS)} backing files (other formats "
                         "name further files qemu would open)")
    resolved = os.path.realpath(backing)
    if not _inside(resolved, roots):
        raise ImageError(f"image {owner} has backing file {backing} {_outside(roots)}")
    try:
        st = _stat_regular(backing, resolved, "backing file")
    except ImageError as e:
        raise ImageError(f"image {owner}: {e}") from None
    return resolved, str(fmt), st


def _check_data_file(layer: dict[str, Any], roots: Sequence[str]
                     ) -> tuple[str, os.stat_result] | None:
    """A qcow2 external data file holds the guest's data: confine it as a backing
    file; its real path and stat, or None when the layer has none."""
    specific = layer.get("format-specific") or {}
    if specific.get("type") != "qcow2":
        return None
    data_file = (specific.get("data") or {}).get("data-file")
    if data_file is None:
        return None
    owner = layer.get("filename")
    if not os.path.isabs(data_file):
        # qemu 7.2 opens a relative name against its own working folder, not the image's
        raise ImageError(f"image {owner} names its data file {data_file!r}, not an absolute "
                         "file path; refusing it (to keep it, make it absolute: "
                         f"qemu-img amend -f qcow2 -o data_file=/full/path {owner})")
    resolved = os.path.realpath(data_file)
    if not _inside(resolved, roots):
        raise ImageError(f"image {owner} has data file {data_file} {_outside(roots)}")
    try:
        st = os.stat(resolved)
    except OSError as e:
        raise ImageError(f"image {owner}: data file {data_file} cannot be read: "
                         f"{e.strerror}") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise ImageError(f"image {owner}: data file {_shown(data_file, resolved)} is a {kind}, "
                         "not a regular file; refusing it")
    return resolved, st


def check_vm(vm: VM, policy: SafetyPolicy, files: ChainFiles | None = None) -> VM:
    """Every disk of ``vm`` checked; the VM with resolved paths. A VM that has a
    ``home`` folder of its own is confined to it (and the shared roots).
    ``files``, if given, gets every file the disks need (:class:`ChainFile`)."""
    import dataclasses

    if vm.home is not None and policy.disk_roots is not None:
        policy = dataclasses.replace(policy, disk_roots=list(policy.shared_roots),
                                     home=vm.home)
    mine: ChainFiles = []
    disks = tuple(check_disk(d, policy, vm.live, mine) for d in vm.disks)
    for f in mine:
        owner, group = policy.fleet_disks.get(f.path, (vm.name, vm.trust_group))
        if owner != vm.name and group != vm.trust_group:
            what = "image" if f.role == "disk" else f"{f.role} file"
            raise ImageError(f"VM {vm.name}: its {what} {f.path} is the disk of VM {owner!r} "
                             f"(trust group {group!r}); refusing it (a VM may not read "
                             "another trust group's disk)")
    if files is not None:
        files.extend(mine)
    keys = tuple(dataclasses.replace(k, file=_check_key_file(k.file, policy)) for k in vm.keys)
    return dataclasses.replace(vm, disks=disks, keys=keys)


def disk_owners(vms: Iterable[VM]) -> dict[str, tuple[str, str]]:
    """Each disk of ``vms``, resolved, with its VM's name and trust group
    (``SafetyPolicy.fleet_disks``)."""
    return {os.path.realpath(d.path): (vm.name, vm.trust_group) for vm in vms
            for d in vm.disks}


def _check_key_file(path: str, policy: SafetyPolicy) -> str:
    """A key file is read on the host: it must be a regular file in the source's
    folders, like the disks (a manifest must not make guestpool read, say,
    /etc/shadow into an appliance)."""
    real = os.path.realpath(path)
    if policy.disk_roots is not None and not _inside(real, _resolved(policy.disk_roots,
                                                                      policy.home)):
        raise ImageError(f"key file {path} resolves to {real}, outside the fleet's folders; "
                         "refusing it (a scan can allow another folder with --allow-path)")
    _stat_regular(path, real, "key file")
    return real


MAX_KEY_BYTES = 8192


def luks_keys(vm: VM) -> list[LuksKey]:
    """The VM's LUKS passphrases, read now: the first line of each key file."""
    out = []
    for key in vm.keys:
        try:
            with open(key.file, "rb") as f:
                head = f.read(MAX_KEY_BYTES)
        except OSError as e:
            raise ImageError(f"{vm.name}: cannot read key file {key.file}: {e.strerror}") from None
        line = head.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            secret = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ImageError(f"{vm.name}: key file {key.file} is not UTF-8 text") from None
        if not secret or "\0" in secret:
            raise ImageError(f"{vm.name}: key file {key.file} has an empty first line")
        out.append(LuksKey(secret, key.device))
    return out
