"""`guestpool serve`: a real server on loopback driven by a real HTTP client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.fleet import DemoFleet
from helpers.osv import write_osv
from helpers.server import AUTH, TOKEN, Server, free_port, tiny_manifest
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def paused(tmp_path: Path) -> Iterator[Server]:
    """A paused server with an OSV folder, so fuzzing reaches the /vulns handlers."""
    osv = write_osv(tmp_path / "osv")
    srv = Server(tmp_path / "s.db", str(tiny_manifest(tmp_path)), "--paused", "--osv", str(osv))
    yield srv
    srv.stop()


def test_auth_on_every_mutating_endpoint(paused: Server) -> None:
    c = httpx.Client(base_url=paused.url, timeout=10)
    bad = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
    for headers in bad:
        assert c.post("/scans", json={"budget": 30}, headers=headers).status_code == 401
        assert c.delete("/scans/x", headers=headers).status_code == 401
        assert c.get("/vms", headers=headers).status_code == 401  # reads closed by default
    r = c.post("/scans", json={"budget": 30}, headers=AUTH)
    assert r.status_code == 202
    assert c.delete(f"/scans/{r.json()['id']}", headers=AUTH).json()["state"] == "cancelled"
    assert c.get("/healthz").status_code == 200
    assert c.post("/scans", json={"budget": 1}, headers=AUTH).status_code == 422
    assert c.post("/scans", json={"inspectors": ["nope"]}, headers=AUTH).status_code == 422


def test_no_token_on_a_public_address_refuses_to_start(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("GUESTPOOL_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "guestpool", "serve", "--bind",
                        f"0.0.0.0:{free_port()}", "--store", str(tmp_path / "s.db")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in r.stderr
    assert "Traceback" not in r.stderr


def test_restart_mid_queue_loses_no_accepted_request(tmp_path: Path) -> None:
    manifest = str(tiny_manifest(tmp_path))
    srv = Server(tmp_path / "s.db", manifest, "--paused")
    c = httpx.Client(base_url=srv.url, headers=AUTH, timeout=10)
    ids = [c.post("/scans", json={"budget": 60 + i}).json()["id"] for i in range(3)]
    ahead = c.get(f"/scans/{ids[2]}").json()["estimated_start_s"]
    assert ahead == pytest.approx(60 + 61, abs=1)
    srv.stop()
    srv2 = Server(tmp_path / "s.db", manifest, "--paused")
    try:
        c2 = httpx.Client(base_url=srv2.url, headers=AUTH, timeout=10)
        assert [c2.get(f"/scans/{i}").json()["state"] for i in ids] == ["queued"] * 3
    finally:
        srv2.stop()


def test_metrics_start_from_the_stored_last_round(tmp_path: Path) -> None:
    """A service started on a store whose last round covered 68 of 100 VMs says so
    before running any round (it used to say 0)."""
    from guestpool import Store

    store = Store(tmp_path / "s.db")
    rid = store.start_round(300, "pooled", 2, 70)
    store.end_round(rid, {"covered": 68, "inspected": 18, "unchanged": 50, "failed": 2,
                          "not_reached": 30, "overrun_s": 1.5, "oldest_carried_s": 600.0})
    store.start_round(300, "pooled", 2, 70)  # a round a killed service left open
    store.close()
    srv = Server(tmp_path / "s.db", str(tiny_manifest(tmp_path)), "--paused")
    try:
        text = httpx.get(srv.url + "/metrics", headers=AUTH).text
    finally:
        srv.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("guestpool_round_coverage_ratio", ())] == 0.68
    assert samples[("guestpool_round_overrun_seconds", ())] == 1.5
    assert samples[("guestpool_round_vms", (("state", "unchanged"),))] == 50
    assert samples[("guestpool_round_oldest_carried_seconds", ())] == 600.0


def test_openapi_fuzzing_finds_no_server_error(paused: Server) -> None:
    exe = Path(sys.executable).with_name("schemathesis")
    r = subprocess.run([str(exe), "run", f"{paused.url}/openapi.json", "-H",
                        f"Authorization: Bearer {TOKEN}", "--checks", "not_a_server_error",
                        "--max-examples", "25", "--no-color"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.appliance
def test_scan_lifecycle_results_drift_metrics_and_status_page(
        tmp_path: Path, demo_fleet: DemoFleet) -> None:
    srv = Server(tmp_path / "s.db", str(demo_fleet.manifest), "--pool", "1")
    try:
        c = httpx.Client(base_url=srv.url, headers=AUTH, timeout=10)
        names = [v.name for v in demo_fleet.vms[:4]]
        body = {"vms": names, "budget": 90, "inspectors": ["os", "packages"]}
        t = time.monotonic()
        r = c.post("/scans", json=body, headers={"Idempotency-Key": "round-1"})
        # answered before any appliance boots (a boot is ~18 s here): a generous bound
        assert r.status_code == 202 and time.monotonic() - t < 10
        scan_id = r.json()["id"]
        again = c.post("/scans", json=body, headers={"Idempotency-Key": "round-1"})
        assert again.status_code == 200 and again.json()["id"] == scan_id
        seen_progress, seen_pool = set(), False
        deadline = time.monotonic() + 150
        while True:
            s = c.get(f"/scans/{scan_id}").json()
            if s["progress"]:
                seen_progress.add(s["progress"]["done"])
            seen_pool |= bool(c.get("/pool").json()["appliances"])
            if s["state"] in ("done", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert s["state"] == "done", s
        assert s["summary"]["covered"] == 4
        assert seen_progress and seen_pool
        vm = c.get(f"/vms/{names[0]}").json()
        assert vm["results"]["os"]["value"]["hostname"] == demo_fleet.truth[names[0]]["os"][
            "hostname"]
        assert vm["vm_state"] == vm["state"] == "inspected" and vm["last_error"] is None
        listed = {v["name"]: v for v in c.get("/vms").json()}
        assert listed[names[0]]["state"] == "inspected"
        assert listed[names[0]]["distro"] == vm["results"]["os"]["value"]["distro"]
        assert listed[names[0]]["inspected_at"] == vm["inspected_at"]
        assert c.get(f"/vms/{names[0]}/drift").json() == []
        assert c.get("/vms/no-such-vm").status_code == 404
        metrics = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
        assert metrics["guestpool_boots"].samples[0].value >= 1
        assert "guestpool_job_seconds" in metrics and "guestpool_failures" in metrics
        assert metrics["guestpool_round_coverage_ratio"].samples[0].value == 1.0
        waits = metrics["guestpool_job_wait_seconds"].samples
        assert any(x.name.endswith("_count") and x.value >= 4 for x in waits)
        # cancel: a queued scan is cancelled at once, a running one finishes in-flight jobs
        q = c.post("/scans", json={"budget": 120}).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/scans/{q}").json()["state"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert c.delete(f"/scans/{q}").status_code == 202
        deadline = time.monotonic() + 120
        while (state := c.get(f"/scans/{q}").json()["state"]) == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert state == "cancelled"
        _check_status_page(srv, tmp_path)
    finally:
        srv.stop()


def _check_status_page(srv: Server, tmp_path: Path) -> None:
    """The status page in a real headless Chromium: DOM and a screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is needed for the status page test (bootstrap --dev installs it)"
    # Chromium cannot send a bearer token from its command line: a second server on the
    # same store serves the page with --open-reads.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}"]
    shot = tmp_path / "status.png"
    open_srv = Server(tmp_path / "s.db", "--paused", "--open-reads")
    try:
        url = f"{open_srv.url}/"
        run = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        dom = run.stdout
        for element in ('id="round"', 'id="pool"', 'id="rounds"', 'id="drift"',
                        'http-equiv="refresh"'):
            assert element in dom, element
        assert "no round yet" not in dom  # the rounds the scans above ran, from the store
        run = subprocess.run([chromium, *flags, f"--screenshot={shot}",
                              "--window-size=1100,900", url], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert shot.stat().st_size > 5000
        if os.environ.get("GUESTPOOL_SCREENSHOT_DIR"):  # to look at it
            shutil.copy(shot, Path(os.environ["GUESTPOOL_SCREENSHOT_DIR"]) / "status.png")
    finally:
        open_srv.stop()
