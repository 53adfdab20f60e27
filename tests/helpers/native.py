"""The real readers, through ctypes: libhivex (what libguestfs reads hives with) and
librpm (what libguestfs lists rpm packages with). Both ship with libguestfs on Debian."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Any

import pytest


def _lib(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(name)
    except OSError:
        pytest.skip(f"{name} is not installed (it comes with libguestfs)")


def hive_values(path: Path, key_path: list[str]) -> dict[str, Any]:
    """The values of one key of a hive file, as hivex reads them (str or int)."""
    hx = _lib("libhivex.so.0")
    hx.hivex_open.restype = ctypes.c_void_p
    hx.hivex_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
    for fn in ("hivex_root", "hivex_node_get_child", "hivex_node_values"):
        getattr(hx, fn).restype = ctypes.c_size_t if fn != "hivex_node_values" \
            else ctypes.POINTER(ctypes.c_size_t)
    hx.hivex_root.argtypes = [ctypes.c_void_p]
    hx.hivex_node_get_child.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    hx.hivex_node_values.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    hx.hivex_value_key.restype = ctypes.c_void_p
    hx.hivex_value_key.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    hx.hivex_value_type.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_int),
                                    ctypes.POINTER(ctypes.c_size_t)]
    hx.hivex_value_string.restype = ctypes.c_void_p
    hx.hivex_value_string.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    hx.hivex_value_dword.restype = ctypes.c_int32
    hx.hivex_value_dword.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    hx.hivex_value_value.restype = ctypes.c_void_p
    hx.hivex_value_value.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                     ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_size_t)]
    hx.hivex_close.argtypes = [ctypes.c_void_p]
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.free.argtypes = [ctypes.c_void_p]

    def take(ptr: int | None) -> bytes:
        assert ptr, "hivex returned NULL"
        value = ctypes.string_at(ptr)
        libc.free(ptr)
        return value

    h = hx.hivex_open(os.fsencode(path), 0)
    assert h, f"hivex cannot open {path}"
    try:
        node = hx.hivex_root(h)
        for name in key_path:
            node = hx.hivex_node_get_child(h, node, name.encode())
            assert node, f"no key {name!r} in {path}"
        values = hx.hivex_node_values(h, node)
        out: dict[str, Any] = {}
        i = 0
        while values[i]:
            v = values[i]
            name = take(hx.hivex_value_key(h, v)).decode()
            t, size = ctypes.c_int(), ctypes.c_size_t()
            hx.hivex_value_type(h, v, ctypes.byref(t), ctypes.byref(size))
            if t.value in (1, 2):
                out[name] = take(hx.hivex_value_string(h, v)).decode()
            elif t.value == 4:
                out[name] = hx.hivex_value_dword(h, v)
            else:
                raw = hx.hivex_value_value(h, v, ctypes.byref(t), ctypes.byref(size))
                out[name] = ctypes.string_at(raw, size.value)
                libc.free(raw)
            i += 1
        libc.free(ctypes.cast(values, ctypes.c_void_p))
        return out
    finally:
        hx.hivex_close(h)


def rpm_packages(dbpath: Path) -> list[tuple[str, int | None, str, str, str]]:
    """(name, epoch, version, release, arch) of every header librpm reads from an rpm
    database folder, opened read-only as libguestfs opens it."""
    rpm, rpmio = _lib("librpm.so.9"), _lib("librpmio.so.9")
    rpm.rpmReadConfigFiles(None, None)
    rpmio.rpmPushMacro(None, b"_dbpath", None, os.fsencode(dbpath), -7)  # RMIL_CMDLINE
    rpm.rpmtsCreate.restype = ctypes.c_void_p
    rpm.rpmtsInitIterator.restype = ctypes.c_void_p
    rpm.rpmtsInitIterator.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_size_t]
    rpm.rpmdbNextIterator.restype = ctypes.c_void_p
    rpm.rpmdbNextIterator.argtypes = [ctypes.c_void_p]
    rpm.headerGetAsString.restype = ctypes.c_void_p
    rpm.headerGetAsString.argtypes = [ctypes.c_void_p, ctypes.c_int]
    rpm.rpmdbFreeIterator.argtypes = [ctypes.c_void_p]
    rpm.rpmtsFree.argtypes = [ctypes.c_void_p]
    ts = rpm.rpmtsCreate()
    it = rpm.rpmtsInitIterator(ts, 0, None, 0)
    assert it, f"librpm cannot open the database in {dbpath}"
    out = []
    try:
        while h := rpm.rpmdbNextIterator(it):
            fields = []
            for tag in (1000, 1003, 1001, 1002, 1022):
                ptr = rpm.headerGetAsString(h, tag)
                fields.append(ctypes.string_at(ptr).decode() if ptr else None)
            name, epoch, version, release, arch = fields
            out.append((str(name), int(epoch) if epoch else None, str(version), str(release),
                        str(arch)))
    finally:
        rpm.rpmdbFreeIterator(it)
        rpm.rpmtsFree(ts)
        rpmio.rpmPopMacro(None, b"_dbpath")
    return out
