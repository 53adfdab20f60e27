"""SBOM documents (CycloneDX JSON, SPDX 2.3 JSON) of one VM's stored package
list, with the operating system as the root component, so the results flow
into the tools operators already use (Dependency-Track, Grype, ...).

Documents are deterministic: serial number, namespace and timestamp derive
from the VM and the time of its result, so exporting twice gives equal bytes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL
from spdx_tools.spdx.jsonschema.document_converter import DocumentConverter
from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.package import (
    ExternalPackageRef,
    ExternalPackageRefCategory,
    Package,
    PackagePurpose,
)
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.writer.write_utils import convert

from guestpool._errors import GuestpoolError

from . import _distro

Format = Literal["cyclonedx", "spdx"]
FORMATS: tuple[Format, ...] = ("cyclonedx", "spdx")
CYCLONEDX_VERSIONS = {"1.5": SchemaVersion.V1_5, "1.6": SchemaVersion.V1_6}
TOOL = "guestpool"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://guestpool.invalid/sbom")

# os-release ID -> purl namespace, where the usual one differs from the ID
_PURL_NAMESPACE = {"rhel": "redhat", "opensuse-leap": "opensuse",
                   "opensuse-tumbleweed": "opensuse", "sles": "suse", "ol": "oracle"}


def purl(package: Mapping[str, Any], distro: _distro.Distro) -> str:
    """The package URL of one package, as SBOM consumers and scanners expect it:
    ``pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12``
    (deb: the epoch is part of the version), ``pkg:rpm/fedora/bash@5.2.26-3.fc40
    ?arch=x86_64&distro=fedora-40`` (rpm: the epoch is a qualifier),
    ``pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.1``."""
    fmt = distro.package_format
    qualifiers: dict[str, str] = {}
    if package.get("arch"):
        qualifiers["arch"] = str(package["arch"])
    epoch = package.get("epoch")
    if fmt == "rpm":
        version = _distro.full_version({**package, "epoch": None}, fmt)
        if epoch not in (None, "", 0, "0"):
            qualifiers["epoch"] = str(epoch)
    else:
        version = _distro.full_version(package, fmt)
    if distro.version:
        qualifiers["distro"] = f"{distro.id}-{distro.version}"
    src = package.get("source")
    if src and src != package.get("name"):
        qualifiers["upstream"] = str(src)
    kind = fmt if fmt in ("deb", "rpm", "apk") else "generic"
    return PackageURL(type=kind, namespace=_PURL_NAMESPACE.get(distro.id, distro.id),
                      name=str(package["name"]), version=version or None,
                      qualifiers=qualifiers).to_string()


def sbom(latest: Mapping[str, Any], fmt: Format = "cyclonedx", *,
         cyclonedx_version: str = "1.6") -> dict[str, Any]:
    """The SBOM of one VM's latest result (``Store.latest`` shape) as a JSON
    object. Raises GuestpoolError when the VM has no package list."""
    if fmt == "cyclonedx":
        return json.loads(cyclonedx_json(latest, cyclonedx_version))  # type: ignore[no-any-return]
    if fmt == "spdx":
        return spdx(latest)
    raise GuestpoolError(f"unknown SBOM format {fmt!r}: use one of {', '.join(FORMATS)}")


def _when(latest: Mapping[str, Any]) -> datetime:
    at = latest.get("at")
    if isinstance(at, int | float):
        return datetime.fromtimestamp(at, UTC).replace(microsecond=0)
    if isinstance(at, str):
        try:
            parsed = datetime.fromisoformat(at)
        except ValueError:
            pass
        else:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).replace(microsecond=0)
    return datetime.now(UTC).replace(microsecond=0)


def _doc_uuid(latest: Mapping[str, Any]) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{latest.get('vm')}@{latest.get('at')}")


def _refs(latest: Mapping[str, Any]) -> tuple[_distro.Distro, list[tuple[Mapping[str, Any], str]]]:
    """The distribution and each package with a unique purl (duplicate rows dropped)."""
    pkgs = _distro.packages(latest)
    dist = _distro.distro(latest)
    seen: dict[str, Mapping[str, Any]] = {}
    for p in pkgs:
        seen.setdefault(purl(p, dist), p)
    return dist, [(p, ref) for ref, p in seen.items()]


def cyclonedx_json(latest: Mapping[str, Any], version: str = "1.6") -> str:
    """The CycloneDX JSON text (spec ``version`` 1.5 or 1.6) of one VM."""
    if version not in CYCLONEDX_VERSIONS:
        raise GuestpoolError(f"CycloneDX {version} is not supported: use one of "
                             f"{', '.join(CYCLONEDX_VERSIONS)}")
    dist, pkgs = _refs(latest)
    vm = str(latest.get("vm") or "unknown")
    root = Component(
        type=ComponentType.OPERATING_SYSTEM, name=dist.id, version=dist.version or None,
        description=dist.product_name or None, bom_ref=f"os:{vm}",
        properties=[Property(name="guestpool:vm", value=vm),
                    *([Property(name="guestpool:arch", value=dist.arch)] if dist.arch else [])])
    components = [
        Component(type=ComponentType.LIBRARY, name=str(p["name"]),
                  version=_distro.full_version(p, dist.package_format) or None,
                  purl=PackageURL.from_string(ref), bom_ref=ref)
        for p, ref in pkgs]
    tool = Component(type=ComponentType.APPLICATION, name=TOOL)
    bom = Bom(serial_number=_doc_uuid(latest), components=components,
              metadata=BomMetaData(component=root, timestamp=_when(latest)))
    bom.metadata.tools.components.add(tool)
    bom.dependencies.add(Dependency(ref=root.bom_ref,
                                    dependencies=[Dependency(ref=c.bom_ref) for c in components]))
    for c in components:
        bom.dependencies.add(Dependency(ref=c.bom_ref))
    outputter = make_outputter(bom, OutputFormat.JSON, CYCLONEDX_VERSIONS[version])
    return outputter.output_as_string(indent=None)


def _spdx_id(kind: str, index: int, name: str) -> str:
    return f"SPDXRef-{kind}-{index}-" + (re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "x")


def spdx(latest: Mapping[str, Any]) -> dict[str, Any]:
    """The SPDX 2.3 JSON object of one VM."""
    dist, pkgs = _refs(latest)
    vm = str(latest.get("vm") or "unknown")
    created = _when(latest)
    info = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"{TOOL}-{vm}",
        document_namespace=f"https://guestpool.invalid/spdx/{_doc_uuid(latest)}",
        creators=[Actor(ActorType.TOOL, TOOL)], created=created)
    os_id = "SPDXRef-OperatingSystem"
    packages = [Package(
        spdx_id=os_id, name=dist.id, version=dist.version or None,
        download_location=SpdxNoAssertion(), files_analyzed=False, supplier=SpdxNoAssertion(),
        primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
        description=dist.product_name or None, comment=f"guestpool VM {vm}")]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, os_id)]
    for i, (p, ref) in enumerate(pkgs):
        pid = _spdx_id("Package", i, str(p["name"]))
        packages.append(Package(
            spdx_id=pid, name=str(p["name"]),
            version=_distro.full_version(p, dist.package_format) or None,
            download_location=SpdxNoAssertion(), files_analyzed=False,
            supplier=SpdxNoAssertion(), primary_package_purpose=PackagePurpose.LIBRARY,
            external_references=[ExternalPackageRef(
                ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", ref)]))
        relationships.append(Relationship(os_id, RelationshipType.CONTAINS, pid))
    # Not validated here: spdx-tools' validator is quadratic in packages (12 s
    # for 3,000); the tests validate documents of every demo distribution.
    document = Document(info, packages=packages, relationships=relationships)
    return convert(document, DocumentConverter())  # type: ignore[no-untyped-call]
