"""The command line end to end: monitor (with SIGTERM), report, show, drift, export."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet

from guestpool import InspectResult, Store, write_manifest

GP = [sys.executable, "-m", "guestpool"]


def test_report_show_drift_export(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    store = Store(db)
    rid = store.start_round(60, "pooled", 1, 1)
    v1 = {"os": {"inspector": "os", "version": "1", "ok": True,
                 "value": {"hostname": "a", "distro": "debian"}}}
    v2 = {"os": {"inspector": "os", "version": "1", "ok": True,
                 "value": {"hostname": "b", "distro": "debian"}}}
    store.record(rid, InspectResult("web", True, v1))
    store.record(rid, InspectResult("web", True, v2))
    store.end_round(rid, {"covered": 1, "failed": 0})
    store.close()

    def run(*args: str) -> str:
        r = subprocess.run([*GP, *args, "--store", str(db)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "covered" in run("report")
    assert json.loads(run("show", "web"))["results"]["os"]["value"]["hostname"] == "b"
    assert "value-changed" in run("drift", "web")
    csv = run("drift", "--format", "csv").splitlines()
    assert len(csv) == 2 and "value-changed" in csv[1]
    assert len(run("export", "--format", "jsonl").splitlines()) == 2
    assert "value-changed" in run("drift", "--since", "1h")
    bad = subprocess.run([*GP, "drift", "--since", "yesterday-ish", "--store", str(db)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.appliance
def test_monitor_runs_rounds_and_stops_cleanly_on_sigterm(demo_fleet: DemoFleet,
                                                          tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [dataclasses.replace(v, trust_group="default")
                              for v in demo_fleet.vms[:3]])
    proc = subprocess.Popen([*GP, "monitor", str(manifest), "--interval", "60", "--budget", "60",
                             "--pool", "1", "--inspectors", "hostname", "--store",
                             str(tmp_path / "m.db")], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("round 1:"):
            assert "covered 3" in line, line
            break
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - start < 30
    store = Store(tmp_path / "m.db")
    assert store.last_round()["summary"]["covered"] == 3


@pytest.mark.parametrize("args, message", [
    (["fleet", "demo", "/proc/forbidden", "--count", "2"], "cannot write"),
    (["fleet", "demo", "{tmp}", "--count", "0"], "--count must be at least 1"),
    (["doctor", "--accel", "warp"], "Invalid value for '--accel'"),
    (["scan", "{tmp}/none.json"], "cannot read fleet manifest"),
])
def test_bad_input_gives_one_line_error(args: list[str], message: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run(GP + args, capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
