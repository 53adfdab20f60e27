"""The service's SBOM and vulnerability endpoints and gauge: a real paused
server on a store filled directly with the demo fleet's package results."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from helpers.osv import expected_demo_findings, write_osv
from helpers.server import AUTH, Server, tiny_manifest
from helpers.stored_results import DEBIAN_12_OS, demo_vm, latest
from prometheus_client.parser import text_string_to_metric_families
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from guestpool import InspectResult, Store
from guestpool.supply import _findings


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A store with demo Debian and Alpine VMs (one round matched with the
    OSV fixture, so findings are recorded) and a VM without a package list."""
    tmp = tmp_path_factory.mktemp("svc")
    osv = write_osv(tmp / "osv")
    store = Store(tmp / "s.db")
    rid = store.start_round(60, "pooled", 1, 1)
    truth = {}
    for kind in ("debian", "alpine"):
        for seed in (1000, 1003):
            result, versions = demo_vm(kind, tmp, seed)
            store.record(rid, InspectResult(result["vm"], True, result["results"]))
            truth[result["vm"]] = (kind, versions)
    store.record(rid, InspectResult("bare", True, latest("bare", DEBIAN_12_OS, None)["results"]))
    _findings.record_round(store, rid, _findings.index_for(osv), [*truth, "bare"])
    store.end_round(rid, {})
    store.close()
    return tmp, osv, truth


@pytest.fixture(scope="module")
def server(filled: tuple[Path, Path, dict[str, Any]]) -> Iterator[httpx.Client]:
    tmp, osv, _ = filled
    srv = Server(tmp / "s.db", str(tiny_manifest(tmp)), "--paused", "--osv", str(osv))
    try:
        client = httpx.Client(base_url=srv.url, headers=AUTH, timeout=30)
        deadline = time.monotonic() + 30
        while client.get("/vulns").status_code == 503:  # the index is read in a thread
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield client
    finally:
        srv.stop()


def test_sbom_endpoint(server: httpx.Client) -> None:
    r = server.get("/vms/vm-debian-1000/sbom")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.cyclonedx+json"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(r.text) is None
    r = server.get("/vms/vm-alpine-1003/sbom", params={"format": "cyclonedx", "spec": "1.5"})
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(r.text) is None
    assert r.json()["specVersion"] == "1.5"
    r = server.get("/vms/vm-alpine-1003/sbom", params={"format": "spdx"})
    assert r.headers["content-type"] == "application/spdx+json"
    assert validate_full_spdx_document(JsonLikeDictParser().parse(r.json())) == []
    assert server.get("/vms/nope/sbom").status_code == 404
    bare = server.get("/vms/bare/sbom")
    assert bare.status_code == 409 and "packages" in bare.json()["error"]
    assert server.get("/vms/bare/sbom", params={"format": "xml"}).status_code == 422
    assert server.get("/vms/bare/sbom", params={"spec": "1.4"}).status_code == 422
    assert httpx.get(f"{server.base_url}/vms/bare/sbom").status_code == 401


def test_vulns_endpoints(server: httpx.Client, filled: tuple[Path, Path, dict[str, Any]]) -> None:
    truth = filled[2]
    for vm, (kind, versions) in truth.items():
        r = server.get(f"/vms/{vm}/vulns")
        assert r.status_code == 200
        got = {(f["id"], f["package"]): f["fixed"] for f in r.json()["findings"]}
        assert got == expected_demo_findings(kind, versions), vm
    assert server.get("/vms/nope/vulns").status_code == 404
    assert server.get("/vms/bare/vulns").status_code == 409
    fleet = server.get("/vulns").json()
    assert set(fleet) == {"osv", "counts", "advisories", "vms"}
    assert sorted(v["vm"] for v in fleet["vms"]) == sorted([*truth, "bare"])
    assert sum(fleet["counts"].values()) == sum(len(v["findings"]) for v in fleet["vms"])
    assert fleet["advisories"][0]["severity"] == "high"


def test_the_gauge_counts_recorded_open_findings(
        server: httpx.Client, filled: tuple[Path, Path, dict[str, Any]]) -> None:
    expected = sum(len(expected_demo_findings(k, v)) for k, v in filled[2].values())
    families = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    samples = {s.labels["severity"]: s.value for s in families["guestpool_vuln_findings"].samples}
    assert set(samples) == {"critical", "high", "medium", "low", "unknown"}
    assert sum(samples.values()) == expected and samples["high"] >= 1


def test_without_an_osv_folder_the_service_says_how_to_configure_it(tmp_path: Path) -> None:
    srv = Server(tmp_path / "s.db", str(tiny_manifest(tmp_path)), "--paused")
    try:
        c = httpx.Client(base_url=srv.url, headers=AUTH, timeout=10)
        for path in ("/vulns", "/vms/x/vulns"):
            r = c.get(path)
            assert r.status_code == 503 and "--osv DIR" in r.json()["error"], path
        assert c.get("/vms/x/sbom").status_code == 404  # SBOMs need no OSV data
        assert json.loads(c.get("/openapi.json").text)["paths"]["/vulns"]["get"]
    finally:
        srv.stop()
