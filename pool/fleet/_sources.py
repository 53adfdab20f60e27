"""Fleet sources: where VMs come from.

    fleet.json | fleet.toml | manifest:PATH   a manifest
    folder:PATH                               one VM per image (or per subfolder)
    nova:PATH                                 OpenStack Nova instance folders
    libvirt:URI                               libvirt domains (libvirt: = qemu:///system)

Every source states each disk's format; none guesses it from content. A new
source is a module in this folder and a line in :data:`SOURCES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from guestpool._errors import FleetError
from guestpool.fleet._folder import FolderSource
from guestpool.fleet._libvirt import GUESTPOOL_XMLNS, LibvirtSource, check_uri, domain_to_vm
from guestpool.fleet._manifest import ManifestSource
from guestpool.fleet._model import VM
from guestpool.fleet._nova import NovaSource
from guestpool.fleet._safety import SafetyPolicy

__all__ = ["GUESTPOOL_XMLNS", "SOURCES", "FolderSource", "LibvirtSource", "ManifestSource",
           "NovaSource", "Source", "check_uri", "domain_to_vm", "open_source", "safety_policy"]


class Source(Protocol):
    """Lists the fleet as it is now. ``allowed_roots``: the folders its disks, backing
    and data files may be in; ``shared_roots``: those every VM may reach (the rest
    belong to one VM each, see ``VM.home``)."""

    name: str
    allowed_roots: list[str]
    shared_roots: list[str]
    # optional: ``disk_owners`` (``_safety.disk_owners`` of the last load), so that
    # no VM's backing or data file may be another VM's disk

    def load(self) -> list[VM]: ...


#: ``KIND:REST`` -> the source it names (``REST``, and whether remote libvirt is allowed).
SOURCES: dict[str, Callable[[str, bool], Source]] = {
    "manifest": lambda rest, _: ManifestSource(Path(rest)),
    "folder": lambda rest, _: FolderSource(Path(rest)),
    "nova": lambda rest, _: NovaSource(Path(rest)),
    "libvirt": lambda rest, remote: LibvirtSource(check_uri(rest.strip() or "qemu:///system",
                                                            remote)),
}


def safety_policy(source: Source, allow_format_mismatch: bool = False,
                  allow_paths: Sequence[str] = ()) -> SafetyPolicy:
    """The source's policy: every disk, backing file and data file inside the
    source's folders (or ``allow_paths``), each VM inside its own folder when it
    has one. Call it after ``source.load()``: some sources learn their folders
    while listing."""
    extra = [os.path.realpath(p) for p in allow_paths]
    return SafetyPolicy(disk_roots=[*source.allowed_roots, *extra],
                        shared_roots=[*source.shared_roots, *extra],
                        allow_format_mismatch=allow_format_mismatch,
                        fleet_disks=getattr(source, "disk_owners", {}))


def open_source(spec: str, *, allow_remote_libvirt: bool = False) -> Source:
    """The source a FLEET argument names (see the module docstring). libvirt URIs
    are local drivers only unless ``allow_remote_libvirt``."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in SOURCES:
        return SOURCES[kind](rest, allow_remote_libvirt)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if path.suffix in (".json", ".toml") or not os.path.exists(spec):
        return ManifestSource(path)
    raise FleetError(f"cannot tell what fleet {spec!r} is: give a manifest (.json/.toml), "
                     "folder:PATH, nova:PATH or libvirt:URI")
