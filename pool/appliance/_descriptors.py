"""Attach exactly what was checked: a disk's files go to qemu as open descriptors.

The supervisor's checks walk a disk's chain (the image, its backing files, their
qcow2 data files) and note each file's device and inode. Handing qemu the path
afterwards would let it open whatever is there *then*, and follow whatever
backing or data file the header names then: an image swapped a second after its
check would be read instead of the checked one. So the worker:

- opens each checked file itself (``O_NOFOLLOW``, never blocking on a FIFO) and
  refuses it unless it is that very file (device and inode);
- passes the descriptors to qemu over the monitor (``add-fd``, SCM_RIGHTS) and
  names them ``/dev/fdset/N``;
- gives ``blockdev-add`` the whole chain explicitly: each backing node, the
  bottom layer's ``"backing": null``, each data file; qemu then opens no path;
- reads back the block nodes qemu created: one that is not one of these
  descriptors (a header rewritten in place to name a data file) is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

from ._protocol import DiskRef, ErrorKind, Layer
from ._qmp import QMP, QMPError

#: the block drivers a chain attached by descriptor may consist of
CHAIN_DRIVERS = frozenset({"qcow2", "raw", "file"})


class ChainRefused(Exception):
    """A file of the chain is not the one checked, or qemu reached for another."""

    kind = ErrorKind.IMAGE


def open_checked(layer: Layer) -> int:
    """A read-only descriptor of ``layer``'s file, which must be the checked one."""
    try:
        fd = os.open(layer.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ChainRefused(f"{layer.role} file {layer.path} cannot be opened since it was "
                           f"checked: {e.strerror}") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (layer.dev, layer.ino) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ChainRefused(f"{layer.role} file {layer.path} was replaced after it was "
                           "checked; refusing it")
    return fd


def hand_over(qmp: QMP, disk: DiskRef) -> list[int]:
    """Each checked file of ``disk`` given to qemu; their fd set ids, in chain order."""
    fdsets: list[int] = []
    try:
        for layer in disk.chain:
            fd = open_checked(layer)
            try:
                added = qmp.command("add-fd", {"opaque": f"guestpool {layer.role}"}, fd=fd)
            finally:
                os.close(fd)  # qemu holds its own copy now
            fdsets.append(int(added["fdset-id"]))
    except BaseException:
        release(qmp, fdsets)
        raise
    return fdsets


def release(qmp: QMP, fdsets: list[int]) -> None:
    """qemu's copies closed (at once, or when the node using them goes)."""
    for fdset in fdsets:
        with contextlib.suppress(QMPError):
            qmp.command("remove-fd", {"fdset-id": fdset})


def chain_options(disk: DiskRef, node: str, fdsets: list[int],
                  share: dict[str, bool]) -> dict[str, Any]:
    """``blockdev-add``'s arguments: every layer explicit, top to bottom."""
    layers: list[list[Any]] = []  # [layer, its fd set, its data file's fd set]
    for layer, fdset in zip(disk.chain, fdsets, strict=True):
        if layer.role == "data":
            layers[-1][2] = fdset
        else:
            layers.append([layer, fdset, None])

    def file(fdset: int) -> dict[str, Any]:
        return {"driver": "file", "filename": f"/dev/fdset/{fdset}", "read-only": True, **share}

    below: dict[str, Any] | None = None
    for layer, fdset, data in reversed(layers):
        options: dict[str, Any] = {"driver": layer.format, "read-only": True, **share,
                                   "file": file(fdset)}
        if layer.format == "qcow2":
            options["backing"] = below  # the bottom layer: null, never the header's
            if data is not None:
                options["data-file"] = file(data)
        below = options
    assert below is not None
    return {**below, "node-name": node}


def node_files(qmp: QMP) -> dict[str, tuple[str, str]]:
    """Every block node qemu has: name -> (driver, file)."""
    nodes = qmp.command("query-named-block-nodes", {"flat": True})
    return {n["node-name"]: (n.get("drv", ""), n.get("file", "")) for n in nodes}


def check_nodes(before: dict[str, tuple[str, str]], after: dict[str, tuple[str, str]],
                fdsets: list[int], disk: DiskRef) -> None:
    """The nodes the attach created read only the descriptors handed over."""
    ours = {f"/dev/fdset/{n}" for n in fdsets}
    for name in after.keys() - before.keys():
        driver, file = after[name]
        if driver not in CHAIN_DRIVERS or (driver == "file" and file not in ours):
            raise ChainRefused(f"image {disk.path} changed after it was checked: qemu opened "
                               f"{file or driver!r} for it; refusing it")
