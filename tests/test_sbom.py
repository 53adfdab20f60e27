"""SBOM export: purls, and CycloneDX / SPDX documents checked by the schema
validators the libraries ship (a test fails when a document is invalid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from helpers.stored_results import deb, demo_latest, latest, os_value, packages_value
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from guestpool import GuestpoolError
from guestpool.supply import _sbom
from guestpool.supply._distro import distro

KINDS = ("debian", "fedora", "alpine")


def cyclonedx_problems(doc: dict[str, Any], version: str) -> str | None:
    error = JsonStrictValidator(SchemaVersion.from_version(version)).validate_str(json.dumps(doc))
    return None if error is None else str(error)


def spdx_problems(doc: dict[str, Any]) -> list[str]:
    parsed = JsonLikeDictParser().parse(json.loads(json.dumps(doc)))
    return [m.validation_message for m in validate_full_spdx_document(parsed)]


def test_the_validators_reject_broken_documents(tmp_path: Path) -> None:
    """The checks below can fail: break each format once."""
    vm = demo_latest("debian", tmp_path)
    cdx = _sbom.sbom(vm, "cyclonedx")
    cdx["components"][0]["type"] = "no-such-type"
    assert cyclonedx_problems(cdx, "1.6") is not None
    spdx = _sbom.sbom(vm, "spdx")
    spdx["relationships"].append({"spdxElementId": "SPDXRef-OperatingSystem",
                                  "relationshipType": "CONTAINS",
                                  "relatedSpdxElement": "SPDXRef-missing"})
    assert spdx_problems(spdx)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["1.5", "1.6"])
def test_cyclonedx_validates_with_the_os_as_root(tmp_path: Path, kind: str, version: str) -> None:
    vm = demo_latest(kind, tmp_path)
    doc = _sbom.sbom(vm, "cyclonedx", cyclonedx_version=version)
    assert cyclonedx_problems(doc, version) is None
    assert doc["specVersion"] == version
    root = doc["metadata"]["component"]
    assert root["type"] == "operating-system"
    assert (root["name"], root["version"]) == {"debian": ("debian", "12"),
                                               "fedora": ("fedora", "40"),
                                               "alpine": ("alpine", "3.20.1")}[kind]
    pkgs = vm["results"]["packages"]["value"]["packages"]
    assert len(doc["components"]) == len(pkgs)
    [deps] = [d for d in doc["dependencies"] if d["ref"] == root["bom-ref"]]
    assert sorted(deps["dependsOn"]) == sorted(c["bom-ref"] for c in doc["components"])
    prefix = {"debian": "pkg:deb/debian/", "fedora": "pkg:rpm/fedora/",
              "alpine": "pkg:apk/alpine/"}[kind]
    assert all(c["purl"].startswith(prefix) for c in doc["components"])


@pytest.mark.parametrize("kind", KINDS)
def test_spdx_validates_with_the_os_as_root(tmp_path: Path, kind: str) -> None:
    vm = demo_latest(kind, tmp_path)
    doc = _sbom.sbom(vm, "spdx")
    assert spdx_problems(doc) == []
    assert doc["spdxVersion"] == "SPDX-2.3"
    os_pkg = next(p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-OperatingSystem")
    assert os_pkg["primaryPackagePurpose"] == "OPERATING_SYSTEM" and os_pkg["name"] == kind
    rels = {(r["spdxElementId"], r["relationshipType"]) for r in doc["relationships"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES") in rels
    contained = [r for r in doc["relationships"] if r["relationshipType"] == "CONTAINS"]
    assert len(contained) == len(vm["results"]["packages"]["value"]["packages"])
    purls = [ref["referenceLocator"] for p in doc["packages"] for ref in p.get("externalRefs", [])]
    assert len(purls) == len(contained)


def test_documents_are_deterministic(tmp_path: Path) -> None:
    vm = demo_latest("debian", tmp_path)
    for fmt in _sbom.FORMATS:
        assert _sbom.sbom(vm, fmt) == _sbom.sbom(vm, fmt)
    other = {**vm, "at": vm["at"] + 60}
    assert _sbom.sbom(other, "cyclonedx")["serialNumber"] != \
        _sbom.sbom(vm, "cyclonedx")["serialNumber"]
    assert _sbom.sbom(vm, "spdx")["creationInfo"]["created"] == "2024-11-19T07:06:40Z"


def test_purls() -> None:
    debian = distro(latest("v", os_value("debian", "12", "deb"), packages_value("deb", [])))
    assert _sbom.purl(deb("openssl", "3.0.11-1~deb12u2"), debian) == \
        "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"
    assert _sbom.purl(deb("openssh-server", "1:9.2p1-2+deb12u2", source="openssh"), debian) == (
        "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u2"
        "?arch=amd64&distro=debian-12&upstream=openssh")
    assert _sbom.purl(deb("dpkg", "1.21.22"), debian) == \
        "pkg:deb/debian/dpkg@1.21.22?arch=amd64&distro=debian-12"
    fedora = distro(latest("v", os_value("fedora", "40", "rpm"), packages_value("rpm", [])))
    assert _sbom.purl({"name": "bash", "version": "5.2.26", "release": "3.fc40", "epoch": None,
                       "arch": "x86_64"}, fedora) == \
        "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40"
    assert _sbom.purl({"name": "openssl", "version": "3.0.7", "release": "25.el9_3", "epoch": 1,
                       "arch": "x86_64"},
                      distro(latest("v", os_value("rhel", "9.3", "rpm"), None))) == \
        "pkg:rpm/redhat/openssl@3.0.7-25.el9_3?arch=x86_64&distro=rhel-9.3&epoch=1"
    alpine = distro(latest("v", os_value("alpine", "3.20.1", "apk"), packages_value("apk", [])))
    assert _sbom.purl({"name": "musl", "version": "1.2.5", "release": "r0", "epoch": None,
                       "arch": "x86_64"}, alpine) == \
        "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.1"


def test_duplicate_rows_become_one_component() -> None:
    pkgs = [deb("bash", "5.2.15-2+b2"), deb("bash", "5.2.15-2+b2"),
            deb("libc6", "2.36-9", arch="i386"), deb("libc6", "2.36-9")]
    vm = latest("v", os_value("debian", "12", "deb"), packages_value("deb", pkgs))
    doc = _sbom.sbom(vm, "cyclonedx")
    assert cyclonedx_problems(doc, "1.6") is None
    assert len(doc["components"]) == 3
    assert spdx_problems(_sbom.sbom(vm, "spdx")) == []


def test_a_large_package_list_validates() -> None:
    pkgs = [deb(f"lib{i}-name+x", f"{i}.0-1~deb12u{i % 3}") for i in range(800)]
    vm = latest("big", os_value("debian", "12", "deb"), packages_value("deb", pkgs))
    assert cyclonedx_problems(_sbom.sbom(vm, "cyclonedx"), "1.6") is None
    assert spdx_problems(_sbom.sbom(vm, "spdx")) == []


@pytest.mark.parametrize("packages", [
    None,  # never ran the packages inspector
    {"format": "none", "count": 0, "packages": []},  # no operating system
    {"format": "unknown", "count": 0, "packages": []},
])
def test_no_package_results_is_a_clear_error(packages: dict[str, Any] | None) -> None:
    vm = latest("vm7", os_value("debian", "12", "deb"), packages)
    for fmt in _sbom.FORMATS:
        with pytest.raises(GuestpoolError, match="VM vm7 has no") as e:
            _sbom.sbom(vm, fmt)
        assert "\n" not in str(e.value)


def test_a_failed_packages_result_is_a_clear_error() -> None:
    vm = latest("vm8", os_value("debian", "12", "deb"), packages_value("deb", [deb("a", "1")]))
    vm["results"]["packages"]["ok"] = False
    with pytest.raises(GuestpoolError, match="no successful `packages` result"):
        _sbom.sbom(vm, "spdx")


def test_unknown_format_or_version() -> None:
    vm = latest("v", os_value("debian", "12", "deb"), packages_value("deb", [deb("a", "1")]))
    with pytest.raises(GuestpoolError, match="unknown SBOM format"):
        _sbom.sbom(vm, "swid")  # type: ignore[arg-type]
    with pytest.raises(GuestpoolError, match=r"CycloneDX 1\.2 is not supported"):
        _sbom.sbom(vm, "cyclonedx", cyclonedx_version="1.2")
