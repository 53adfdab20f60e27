"""A folder of images as a source: one VM per image, or per subfolder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool._errors import FleetError

from ._model import VM, Disk
from ._safety import disk_owners
from ._schema import FORMATS, FieldError, parse_vm

log = logging.getLogger("guestpool")
#: a subfolder that holds backing files several VMs share (like Nova's): not a VM
SHARED_BASES = "_base"
EXTENSIONS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw"}


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
    A subfolder is one VM whose disks are its images, in name order; ``_base``
    holds backing files any VM may use. Each VM's disks, backing and data files
    stay in its own subfolder (or image) and ``_base``."""

    path: Path
    name: str = "folder"
    allowed_roots: list[str] = field(default_factory=list)
    shared_roots: list[str] = field(default_factory=list)
    #: every disk of the last load, with its VM (the safety policy's ``fleet_disks``)
    disk_owners: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # every VM is confined to its own files: a subfolder VM to its subfolder, a
        # single image to itself; backing files shared by several VMs go in _base
        self.allowed_roots = [str(self.path.resolve())]
        self.shared_roots = [str((self.path / SHARED_BASES).resolve())]

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
            if entry.name.startswith(".") or entry.suffix in (".json", ".format") \
                    or entry.name == SHARED_BASES:
                continue
            images = sorted(p for p in entry.iterdir() if p.is_file()) if entry.is_dir() \
                else [entry]
            found = [d for p in images if p.suffix not in (".json", ".format")
                     and (d := self._disk(p)) is not None]
            if not found:
                continue
            meta = found[0][1]
            # its subfolder, or its one image: named, not followed (a link to
            # another VM's files must not make them this VM's own)
            home = str(self.path.resolve() / entry.name)
            # a file's name and its sidecar are the manifest's fields here: checked the
            # same way (a newline in a name would forge progress lines and CSV rows)
            described: dict[str, Any] = {
                "name": entry.stem if entry.is_file() else entry.name,
                "disks": [{"path": d.path, "format": d.format} for d, _ in found],
                **{k: meta[k] for k in ("tags", "trust_group", "priority") if k in meta}}
            try:
                fields = parse_vm(described)
            except FieldError as e:
                log.warning("skipping %r: %s", str(entry)[-300:], e)
                continue
            vms.append(VM(fields["name"], tuple(d for d, _ in found), tags=fields["tags"],
                          trust_group=fields["trust_group"], priority=fields["priority"],
                          home=home))
        self.disk_owners = disk_owners(vms)
        return vms
