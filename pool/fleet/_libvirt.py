"""libvirt domains as a source: disks and formats from each domain's XML."""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from guestpool._errors import FleetError

from ._model import VM, Disk
from ._safety import disk_owners
from ._schema import FORMATS

log = logging.getLogger("guestpool")
GUESTPOOL_XMLNS = "https://guestpool.invalid/xmlns/libvirt/1"
#: The local drivers: no transport (``+ssh``, ``+ext`` runs a program), no host,
#: no query string (``?command=``, ``?socket=``).
LOCAL_URIS = ("qemu:///system", "qemu:///session")


def check_uri(uri: str, allow_remote: bool = False) -> str:
    """``uri`` if it names a local libvirt driver; otherwise a FleetError unless allowed."""
    if uri in LOCAL_URIS or allow_remote:
        return uri
    raise FleetError(f"libvirt URI {uri!r} is not a local driver ({' or '.join(LOCAL_URIS)}); "
                     "remote hosts, transports and query strings can run programs or reach "
                     "other hosts: pass --allow-remote-libvirt if you mean it")


@dataclass
class LibvirtSource:
    """Domains of a libvirt connection, disks and formats from their XML.

    A running domain's disks are marked live: they are read without qemu's
    lock and the result says ``live: possibly inconsistent``. The trust group
    comes from ``<metadata><gp:guestpool trust_group="…"/></metadata>`` in the
    namespace :data:`GUESTPOOL_XMLNS`, else ``libvirt``.

    Domain definitions are the administrator's, so the folders of the disks they
    name are allowed (with every storage pool's folder); backing and data files
    must stay inside those folders.
    """

    uri: str = "qemu:///system"
    name: str = "libvirt"
    allowed_roots: list[str] = field(default_factory=lambda: ["/var/lib/libvirt/images"])
    shared_roots: list[str] = field(default_factory=list)
    #: every disk of the last load, with its VM (the safety policy's ``fleet_disks``)
    disk_owners: dict[str, tuple[str, str]] = field(default_factory=dict)

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
            roots = {*self.allowed_roots, *_pool_folders(conn),
                     *(os.path.dirname(os.path.realpath(d.path)) for v in vms for d in v.disks)}
            self.allowed_roots = sorted(roots)
            self.shared_roots = list(self.allowed_roots)
            self.disk_owners = disk_owners(vms)
            return sorted(vms, key=lambda v: v.name)
        finally:
            conn.close()


def _pool_folders(conn: Any) -> list[str]:
    """Target folders of the connection's storage pools (directory-like pools)."""
    out: list[str] = []
    try:
        pools = conn.listAllStoragePools()
    except Exception:  # read-only connections to some drivers cannot list pools
        return out
    for pool in pools:
        try:
            path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
        except Exception:
            continue
        if path and os.path.isdir(path):
            out.append(os.path.realpath(path))
    return out


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
