"""Hostile requests against a real `guestpool serve`: every one refused with a 4xx,
nothing run, the service still answering (issue 13's trust boundary)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.server import AUTH, Server, tiny_manifest

from guestpool.service._queue import MAX_STARTS, ScanQueue


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A program that, if anything ever ran it, would leave a file behind."""
    ran = tmp_path / "marker-ran"
    prog = tmp_path / "marker.sh"
    prog.write_text(f"#!/bin/sh\ntouch {ran}\n")
    prog.chmod(0o755)
    yield prog, ran
    assert not ran.exists(), "a request made the service run a host program"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "s.db", "--fleet", f"demo={tiny_manifest(tmp_path)}", "--paused")
    yield srv
    srv.stop()


def test_hostile_scan_requests_are_refused(server: Server, marker: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    prog, _ = marker
    c = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
    hostile_bodies = [
        {"fleet": f"libvirt:qemu+ext:///system?command={prog}"},
        {"fleet": "libvirt:qemu+ssh://elsewhere/system"},
        {"fleet": "folder:/"},
        {"fleet": "nova:/root"},
        {"fleet": "manifest:/proc/sys/kernel/pid_max"},
        {"fleet": str(tmp_path / "fleet.json")},  # a real manifest, but not configured
        {"fleet": "demo", "inspectors": ["venv.__main__:X"]},
        {"fleet": "demo", "inspectors": ["os:system"]},
        {"fleet": "demo", "inspectors": ["subprocess:Popen"]},
        {"fleet": "demo", "budget": True},
        {"fleet": "demo", "vms": [{"$gt": ""}]},
        {"fleet": "demo", "vms": ["vm0"] * 10_001},  # counted, not only weighed in bytes
        {"fleet": "demo", "inspectors": ["os"] * 65},
        [],
        "demo",
    ]
    for body in hostile_bodies:
        r = c.post("/scans", json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert c.get("/healthz").status_code == 200
    nested = "[" * 100_000 + "]" * 100_000
    r = c.post("/scans", content=nested, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    r = c.post("/scans", content=b"{" + b" " * (50 * 1024 * 1024) + b"}",
               headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert c.get("/scans").json() == []  # nothing hostile was queued
    assert c.post("/scans", json={"fleet": "demo", "budget": 30}).status_code == 202


def test_open_reads_check_the_host_header_too(tmp_path: Path) -> None:
    """With --open-reads, a read without a token is what a rebinding page can
    send: its Host header must name the service; a request with the token need not."""
    from guestpool import SetupError
    from guestpool.service import check_bind

    srv = Server(tmp_path / "s.db", str(tiny_manifest(tmp_path)), "--paused", "--open-reads",
                 "--public-name", "guestpool.example")
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)
        for path in ("/scans", "/vms", "/", "/fleet"):
            assert c.get(path, headers={"Host": "attacker.example:80"}).status_code == 421
            assert c.get(path).status_code == 200  # 127.0.0.1:PORT: the bind's own name
            assert c.get(path, headers={"Host": f"guestpool.example:{srv.port}"}
                         ).status_code == 200
            assert c.get(path, headers={"Host": "attacker.example:80", **AUTH}
                         ).status_code == 200
    finally:
        srv.stop()
    with pytest.raises(SetupError, match="--public-name"):
        check_bind("0.0.0.0", "token", open_reads=True)
    check_bind("0.0.0.0", "token", open_reads=True, public_names=("guestpool.example",))


def test_without_a_token_only_json_from_this_host_is_accepted(tmp_path: Path) -> None:
    srv = Server(tmp_path / "s.db", str(tiny_manifest(tmp_path)), "--paused", token=None)
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)
        # what a web page in a local browser can send without a CORS preflight
        r = c.post("/scans", content=json.dumps({"budget": 30}),
                   headers={"Content-Type": "text/plain"})
        assert r.status_code == 415, r.text
        # DNS rebinding: the page's own host name reaches 127.0.0.1
        for path in ("/scans", "/vms", "/"):
            assert c.get(path, headers={"Host": "attacker.example:80"}).status_code == 421
        r = c.post("/scans", json={"budget": 30}, headers={"Host": "evil.example"})
        assert r.status_code == 421
        assert c.post("/scans", json={"budget": 30}).status_code == 202
        assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 200
    finally:
        srv.stop()


def test_idempotency_keys_are_scoped_per_token(tmp_path: Path) -> None:
    db, manifest = tmp_path / "s.db", str(tiny_manifest(tmp_path))
    first = Server(db, manifest, "--paused", token="token-a")
    try:
        a = httpx.Client(base_url=first.url, timeout=30,
                         headers={"Authorization": "Bearer token-a", "Idempotency-Key": "k"})
        one = a.post("/scans", json={"budget": 30})
        assert one.status_code == 202
        again = a.post("/scans", json={"budget": 30})
        assert again.status_code == 200 and again.json()["id"] == one.json()["id"]
        # the service's own periodic keys cannot be claimed by a client
        other = a.post("/scans", json={"budget": 30},
                       headers={"Idempotency-Key": "monitor:default:1"})
        assert other.status_code == 202
    finally:
        first.stop()
    second = Server(db, manifest, "--paused", token="token-b")
    try:
        b = httpx.Client(base_url=second.url, timeout=30,
                         headers={"Authorization": "Bearer token-b", "Idempotency-Key": "k"})
        r = b.post("/scans", json={"budget": 30})
        assert r.status_code == 202 and r.json()["id"] != one.json()["id"]
    finally:
        second.stop()


def test_a_scan_that_kills_the_service_twice_is_not_run_again(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    queue = ScanQueue(db)
    scan, _ = queue.submit({"fleet": "demo"}, None)
    for _ in range(MAX_STARTS):
        queue.start(scan["id"])
        queue.close()  # the service dies mid-scan
        queue = ScanQueue(db)
    got = queue.get(scan["id"])
    assert got is not None and got["state"] == "failed", got
    assert "not run again" in json.dumps(got["errors"])
    queue.close()


def test_an_unconfigured_fleet_in_the_queue_fails_that_scan_only(tmp_path: Path) -> None:
    """A queue written before the fleet list changed (or by hand): the scan fails with
    its reason, the service keeps serving, and a restart does not crash."""
    db = tmp_path / "s.db"
    queue = ScanQueue(db)
    bad, _ = queue.submit({"fleet": "manifest:/proc/sys/kernel/pid_max"}, None)
    queue.close()
    for _ in range(2):
        srv = Server(db, "--fleet", f"demo={tiny_manifest(tmp_path)}")
        try:
            c = httpx.Client(base_url=srv.url, headers=AUTH, timeout=30)
            deadline = time.monotonic() + 30
            while (s := c.get(f"/scans/{bad['id']}").json())["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, s
                time.sleep(0.2)
            assert s["state"] == "failed" and "not configured" in s["errors"][0]["message"]
            assert c.get("/healthz").status_code == 200
        finally:
            srv.stop()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM scans").fetchone()[0] == 1


def test_a_scan_running_when_the_service_stopped_runs_again(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    queue = ScanQueue(db)
    scan, _ = queue.submit({"fleet": "demo"}, None)
    queue.start(scan["id"])
    queue.close()  # the service stops mid-scan, once
    queue = ScanQueue(db)
    got = queue.get(scan["id"])
    assert got is not None and got["state"] == "queued" and got["started"] is None
    assert queue.next_queued()["id"] == scan["id"]  # type: ignore[index]
    queue.close()


def test_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    srv = Server(tmp_path / "s.db", str(tiny_manifest(tmp_path)), "--paused",
                 "--token-file", str(token), token=None)
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)
        assert c.post("/scans", json={"budget": 30}).status_code == 401
        ok = c.post("/scans", json={"budget": 30},
                    headers={"Authorization": "Bearer from-a-file"})
        assert ok.status_code == 202
    finally:
        srv.stop()
