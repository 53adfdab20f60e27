"""Disk images: host tools make what they can from a host tree (mke2fs -d,
mkfs.btrfs --rootdir, mkfs.xfs -p, mkfs.vfat, sfdisk, qemu-img: no loop
devices, no device mapper, no mounts); appliance steps (``_sh``, ``_fill``,
``_luks_format``) make what needs a kernel (md RAID, LUKS, LVM, btrfs
subvolumes, NTFS contents)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestpool._errors import SetupError
from guestpool.appliance._hotplug import drive_label, kernel_disks
from guestpool.fleet._model import Disk

MiB = 1024 * 1024


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"{cmd[0]} failed: {r.stderr.strip()[:300]}")


def _need_tools() -> None:
    missing = [t for t in ("mke2fs", "mkfs.btrfs", "sfdisk", "qemu-img", "fallocate")
               if shutil.which(t) is None]
    if missing:
        raise SetupError(f"demo fleet needs {', '.join(missing)}: run `bash pool/bootstrap.sh`")


def _write(root: Path, rel: str, content: str | bytes, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)


def _mkfs(kind: str, stage: Path, out: Path, size_mb: int, fs_uuid: str, label: str) -> None:
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size_mb * MiB)
    if kind == "btrfs":
        _run(["mkfs.btrfs", "-q", "-f", "-r", str(stage), "-U", fs_uuid, "-L", label, str(out)])
    else:
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-U", fs_uuid, "-L", label, "-E",
              "root_owner=0:0", "-d", str(stage), str(out)])


def _copy_data(src: Path, dst_fd: int, offset: int) -> None:
    """Copy the data regions of a sparse file into ``dst_fd`` at ``offset``."""
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            os.lseek(fd, start, os.SEEK_SET)
            left = end - start
            dst = offset + start
            while left > 0:
                chunk = os.read(fd, min(left, 4 * MiB))
                if not chunk:
                    break
                os.pwrite(dst_fd, chunk, dst)
                dst += len(chunk)
                left -= len(chunk)
            pos = end
    finally:
        os.close(fd)


def _assemble(out: Path, size_mb: int, parts: list[tuple[int, Path]],
              header: tuple[Path, int] | None, layout: str | None) -> None:
    """Write a disk: partition table (sfdisk ``layout``) or a cached header, then
    each filesystem image at its byte offset."""
    out.unlink(missing_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size_mb * MiB)
        if header is not None:
            _copy_data(header[0], fd, 0)
    finally:
        os.close(fd)
    if layout is not None:
        r = subprocess.run(["sfdisk", "-q", str(out)], input=layout, capture_output=True,
                           text=True)
        if r.returncode:
            raise SetupError(f"sfdisk failed: {r.stderr.strip()[:300]}")
    fd = os.open(out, os.O_WRONLY)
    try:
        for offset, image in parts:
            _copy_data(image, fd, offset)
    finally:
        os.close(fd)


def _finish(raw: Path, fmt: str) -> Path:
    if fmt == "qcow2":
        q = raw.with_suffix(".qcow2")
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)])
        raw.unlink()
        return q
    _run(["fallocate", "--dig-holes", str(raw)])
    return raw


def image_from_tree(tree: Path, out: Path, size_mb: int, fmt: str = "raw",
                    label: str = "root") -> Disk:
    """A one-partition disk whose ext4 filesystem (labelled ``label``) holds ``tree``
    (special files, odd names and sparse files included): for tests and custom fleets."""
    _need_tools()
    with tempfile.TemporaryDirectory(prefix="gp-tree-") as tmp:
        fs = Path(tmp) / "fs"
        _mkfs("ext4", tree, fs, size_mb, str(uuid.uuid4()), label)
        raw = out.with_suffix(".img")
        _assemble(raw, size_mb + 2, [(MiB, fs)], None, "start=2048, type=83\n")
        return Disk(str(_finish(raw, fmt)), fmt)


def _protofile(tree: Path) -> str:
    """An mkfs.xfs protofile that copies ``tree`` (files, dirs, symlinks; owned by root)."""
    out = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        for p in sorted(d.iterdir()):
            ind = " " * depth
            mode = f"{p.lstat().st_mode & 0o777:03o}"
            if p.is_symlink():
                out.append(f"{ind}{p.name} l--{mode} 0 0 {os.readlink(p)}")
            elif p.is_dir():
                out.append(f"{ind}{p.name} d--{mode} 0 0")
                walk(p, depth + 1)
                out.append(f"{ind}$")
            else:
                out.append(f"{ind}{p.name} ---{mode} 0 0 {p}")
    walk(tree, 1)
    return "\n".join([*out, "$", ""])


XFS_MB = 300  # xfsprogs 5.19+ refuses smaller filesystems


def _mkfs_host(kind: str, tree: Path, out: Path, size_mb: int, fs_uuid: str, label: str
               ) -> None:
    """A filesystem image of ``tree`` made by host tools alone."""
    if kind in ("ext4", "btrfs"):
        _mkfs(kind, tree, out, size_mb, fs_uuid, label)
        return
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size_mb * MiB)
    if kind == "xfs":
        proto = out.with_suffix(".proto")
        proto.write_text(_protofile(tree))
        _run(["mkfs.xfs", "-q", "-f", "-m", f"uuid={fs_uuid}", "-L", label, "-p", str(proto),
              str(out)])
        proto.unlink()
    elif kind == "vfat":
        _run(["mkfs.vfat", "-n", label, "-i", fs_uuid.replace("-", "")[:8], str(out)])
    else:
        raise ValueError(kind)


@dataclass
class Part:
    """One partition: ``size_mb`` (None: the rest), sfdisk type, and the host-made
    filesystem it holds (if any): (kind, tree, uuid, label)."""

    size_mb: int | None
    type: str = "83"
    fs: tuple[str, Path, str, str] | None = None
    name: str | None = None
    bootable: bool = False


def _disk(out: Path, size_mb: int, parts: list[Part], label: str = "dos",
          label_id: str | None = None, extended_after: int | None = None) -> None:
    """A partitioned raw disk whose host-made filesystems are written in place.
    With ``extended_after`` = n, partitions after the n-th are logical ones."""
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size_mb * MiB)
    lines = [f"label: {label}"] + ([f"label-id: {label_id}"] if label_id else [])
    number = 0
    for i, p in enumerate(parts):
        if extended_after is not None and i == extended_after:
            lines.append(f"{out}{i + 1} : type=5")
            number = 4
        number += 1
        fields = [f"size={p.size_mb}MiB" if p.size_mb else "", f"type={p.type}",
                  f'name="{p.name}"' if p.name else "", "bootable" if p.bootable else ""]
        lines.append(f"{out}{number} : " + ", ".join(x for x in fields if x))
    r = subprocess.run(["sfdisk", "-q", str(out)], input="\n".join(lines) + "\n",
                       capture_output=True, text=True)
    if r.returncode:
        raise SetupError(f"sfdisk failed: {r.stderr.strip()[:300]}")
    table = json.loads(subprocess.run(["sfdisk", "--json", str(out)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    placed = [p for p in table["partitions"] if p.get("type") not in ("5", "f")]
    with tempfile.TemporaryDirectory(prefix="gp-corpus-fs-") as tmp:
        fd = os.open(out, os.O_WRONLY)
        try:
            for part, entry in zip(parts, placed, strict=True):
                if part.fs is None:
                    continue
                kind, tree, fs_uuid, fs_label = part.fs
                image = Path(tmp) / "fs"
                _mkfs_host(kind, tree, image, entry["size"] * 512 // MiB, fs_uuid, fs_label)
                _copy_data(image, fd, entry["start"] * 512)
                image.unlink()
        finally:
            os.close(fd)


def _tar(tree: Path, out: Path) -> Path:
    """A tarball of ``tree`` owned by root, for ``tar_in`` into an appliance mount."""
    def owner(t: tarfile.TarInfo) -> tarfile.TarInfo:
        t.uid = t.gid = 0
        t.uname = t.gname = "root"
        return t
    with tarfile.open(out, "w") as tf:
        for p in sorted(tree.iterdir()):
            tf.add(p, arcname=p.name, filter=owner)
    return out


#: API disk name -> the kernel's, per appliance handle (see _kernel_names)
_KERNEL_NAMES: dict[int, dict[str, str]] = {}


def _sh(g: Any, script: str) -> str:
    """Run a shell script in the appliance (``debug sh``); fails on the first error.

    The script names disks as the API does (``/dev/sda`` = the first drive added);
    the shell sees the kernel's names, which follow the order its SCSI scan
    finished in, not the order the drives were added. So each API disk name is
    replaced by the kernel's before the script runs."""
    names = _KERNEL_NAMES.get(id(g), {})
    script = re.sub(r"/dev/sd[a-z]+", lambda m: names.get(m.group(0), m.group(0)), script)
    return str(g.debug("sh", ["set -e; " + script]))


def _kernel_names(g: Any, count: int, api: list[str]) -> dict[str, str]:
    """The kernel's name of each API disk, through the udev links of the labels."""
    try:
        kernel = kernel_disks(g, [drive_label(i, "c") for i in range(count)])
    except ValueError as e:
        raise SetupError(f"corpus: {e}") from None
    return dict(zip(api, kernel, strict=True))


def _lvm(disks: list[str]) -> str:
    """An lvm --config that sees only ``disks``: two VMs of the corpus share a VG name."""
    accept = ", ".join(f'"a|^{d}|"' for d in disks)
    return f"--config 'devices {{ filter=[{accept}, \"r|.*|\"] }}'"


def _fill(g: Any, dev: str, kind: str, fs_uuid: str, label: str, tree: Path,
          tmp: Path, options: str = "") -> None:
    """Make a filesystem on an appliance device and copy ``tree`` into it."""
    if kind == "ext4":
        _sh(g, f"mke2fs -q -F -t ext4 -U {fs_uuid} -L {label} {dev}")
    elif kind == "ntfs":
        _sh(g, f"mkntfs -q -F -Q -L {label} {dev}")
    else:
        raise ValueError(kind)
    if options:
        g.mount_options(options, dev, "/")
    else:
        g.mount(dev, "/")
    g.tar_in(str(_tar(tree, tmp / f"{label}.tar")), "/")
    g.umount_all()


def _luks_format(g: Any, dev: str, key: str, luks_uuid: str) -> str:
    """LUKS2 with a cheap pbkdf2 (fast to open under TCG), opened as luks-UUID."""
    _sh(g, f"printf %s '{key}' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 "
           f"--pbkdf-force-iterations 1000 --uuid {luks_uuid} --key-file - {dev}; "
           f"printf %s '{key}' | cryptsetup open --key-file - {dev} luks-{luks_uuid}")
    return f"/dev/mapper/luks-{luks_uuid}"
