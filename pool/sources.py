"""Fleet sources: where VMs come from.

    fleet.json | fleet.toml | manifest:PATH   a manifest
    folder:PATH                               one VM per image (or per subfolder)
    nova:PATH                                 OpenStack Nova instance folders
    libvirt:URI                               libvirt domains (libvirt: = qemu:///system)

Every source states each disk's format; none guesses it from content.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import FleetError
from .fleet import FORMATS, VM, Disk, load_manifest
from .safety import DEFAULT_BASE_DIRS, SafetyPolicy

log = logging.getLogger("guestpool")
EXTENSIONS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw"}
GUESTPOOL_XMLNS = "https://guestpool.invalid/xmlns/libvirt/1"


class Source(Protocol):
    """Lists the fleet as it is now; ``allowed_roots`` are where its backing files live."""

    name: str
    allowed_roots: list[str]

    def load(self) -> list[VM]: ...


@dataclass
class ManifestSource:
    path: Path
    name: str = "manifest"
    allowed_roots: list[str] = field(default_factory=list)

    def load(self) -> list[VM]:
        return load_manifest(self.path).vms


def _sidecar(image: Path) -> dict[str, Any]:
    for candidate in (image.with_name(image.name + ".json"), image.with_suffix(".json")):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except ValueError as e:
                raise FleetError(f"sidecar {candidate} is not valid JSON: {e}") from None
            if not isinstance(data, dict):
                raise FleetError(f"sidecar {candidate} must hold a JSON object")
            return data
    fmt = image.with_name(image.name + ".format")
    if fmt.is_file():
        return {"format": fmt.read_text().strip()}
    return {}


@dataclass
class FolderSource:
    """Images in a folder: the extension (.qcow2, .raw, .img) or a sidecar
    (``IMAGE.json`` with format, trust_group, tags, priority) declares the format.
    A subfolder is one VM whose disks are its images, in name order."""

    path: Path
    name: str = "folder"
    allowed_roots: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.allowed_roots = [str(self.path.resolve())]

    def _disk(self, image: Path) -> tuple[Disk, dict[str, Any]] | None:
        meta = _sidecar(image)
        fmt = meta.get("format") or EXTENSIONS.get(image.suffix)
        if fmt is None:
            log.warning("skipping %s: no declared format (extension or sidecar)", image)
            return None
        if fmt not in FORMATS:
            raise FleetError(f"{image}: format {fmt!r} is not one of {FORMATS}")
        return Disk(str(image), fmt), meta

    def load(self) -> list[VM]:
        if not self.path.is_dir():
            raise FleetError(f"folder source {self.path} is not a folder")
        vms = []
        for entry in sorted(self.path.iterdir()):
            if entry.name.startswith(".") or entry.suffix in (".json", ".format"):
                continue
            images = sorted(p for p in entry.iterdir() if p.is_file()) if entry.is_dir() \
                else [entry]
            found = [d for p in images if p.suffix not in (".json", ".format")
                     and (d := self._disk(p)) is not None]
            if not found:
                continue
            meta = found[0][1]
            vms.append(VM(entry.stem if entry.is_file() else entry.name,
                          tuple(d for d, _ in found), tags=tuple(meta.get("tags", ())),
                          trust_group=str(meta.get("trust_group", "default")),
                          priority=int(meta.get("priority", 0))))
        return vms


@dataclass
class NovaSource:
    """A compute node's ``instances`` folder: ``<uuid>/disk`` (+ ``disk.local``),
    formats from ``<uuid>/disk.info``, owner project from ``<uuid>/libvirt.xml``,
    backing files in ``_base``."""

    path: Path
    name: str = "nova"
    allowed_roots: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.allowed_roots = [str(self.path.resolve()), str((self.path / "_base").resolve())]

    def load(self) -> list[VM]:
        if not self.path.is_dir():
            raise FleetError(f"nova instances folder {self.path} is not a folder")
        vms = []
        for inst in sorted(self.path.iterdir()):
            if not inst.is_dir() or inst.name.startswith(("_", ".")) or \
                    inst.name in ("locks", "snapshots"):
                continue
            info_path = inst / "disk.info"
            try:
                info = json.loads(info_path.read_text()) if info_path.exists() else {}
            except ValueError as e:
                raise FleetError(f"{info_path} is not valid JSON: {e}") from None
            disks = []
            for name in ("disk", "disk.local", "disk.eph0"):
                p = inst / name
                if not p.exists():
                    continue
                fmt = info.get(str(p)) or info.get(str(p.resolve()))
                if fmt not in FORMATS:
                    log.warning("skipping %s: disk.info gives no usable format", p)
                    continue
                disks.append(Disk(str(p), fmt))
            if disks:
                vms.append(VM(inst.name, tuple(disks), tags=("nova",),
                              trust_group=_nova_project(inst / "libvirt.xml") or "nova"))
        return vms


def _nova_project(xml_path: Path) -> str | None:
    if not xml_path.is_file():
        return None
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}project") and el.get("uuid"):
            return f"project-{el.get('uuid')}"
    return None


@dataclass
class LibvirtSource:
    """Domains of a libvirt connection, disks and formats from their XML.

    A running domain's disks are marked live: they are read without qemu's
    lock and the result says ``live: possibly inconsistent``. The trust group
    comes from ``<metadata><gp:guestpool trust_group="…"/></metadata>`` in the
    namespace :data:`GUESTPOOL_XMLNS`, else ``libvirt``.
    """

    uri: str = "qemu:///system"
    name: str = "libvirt"
    allowed_roots: list[str] = field(default_factory=lambda: ["/var/lib/libvirt/images"])

    def load(self) -> list[VM]:
        try:
            import libvirt
        except ImportError:
            raise FleetError("libvirt Python bindings are missing: run `bash pool/bootstrap.sh`"
                             " (Debian: python3-libvirt)") from None
        try:
            conn = libvirt.openReadOnly(self.uri)
        except libvirt.libvirtError as e:
            raise FleetError(f"cannot connect to libvirt at {self.uri}: {e}") from None
        try:
            vms = []
            for dom in conn.listAllDomains():
                vm = domain_to_vm(dom.XMLDesc(0), running=bool(dom.isActive()))
                if vm is not None:
                    vms.append(vm)
            return sorted(vms, key=lambda v: v.name)
        finally:
            conn.close()


def domain_to_vm(xml: str, running: bool) -> VM | None:
    """A VM from a libvirt domain's XML; None when it has no file-backed disks."""
    root = ET.fromstring(xml)
    name = root.findtext("name") or "unnamed"
    disks = []
    for d in root.findall("./devices/disk"):
        if d.get("device", "disk") != "disk":
            continue
        source = d.find("source")
        driver = d.find("driver")
        path = source.get("file") if source is not None else None
        fmt = driver.get("type") if driver is not None else None
        if not path:
            log.warning("domain %s: skipping a disk that is not a file", name)
            continue
        if fmt not in FORMATS:
            log.warning("domain %s: skipping %s with format %r", name, path, fmt)
            continue
        disks.append(Disk(path, fmt))
    if not disks:
        return None
    group = "libvirt"
    meta = root.find(f"./metadata/{{{GUESTPOOL_XMLNS}}}guestpool")
    if meta is not None and meta.get("trust_group"):
        group = str(meta.get("trust_group"))
    return VM(name, tuple(disks), tags=("libvirt",), trust_group=group, live=running)


def safety_policy(source: Source, allow_format_mismatch: bool = False) -> SafetyPolicy:
    """The default safety policy, with the source's own folders allowed for backing files."""
    return SafetyPolicy(allowed_roots=[*DEFAULT_BASE_DIRS, *source.allowed_roots],
                        allow_format_mismatch=allow_format_mismatch)


def open_source(spec: str) -> Source:
    """The source a FLEET argument names (see the module docstring)."""
    kind, sep, rest = spec.partition(":")
    if sep and kind == "libvirt":
        return LibvirtSource(rest.lstrip() or "qemu:///system")
    if sep and kind == "nova":
        return NovaSource(Path(rest))
    if sep and kind == "folder":
        return FolderSource(Path(rest))
    if sep and kind == "manifest":
        return ManifestSource(Path(rest))
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if path.suffix in (".json", ".toml") or not os.path.exists(spec):
        return ManifestSource(path)
    raise FleetError(f"cannot tell what fleet {spec!r} is: give a manifest (.json/.toml), "
                     "folder:PATH, nova:PATH or libvirt:URI")
