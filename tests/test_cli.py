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
from helpers.proc import wait_for_line

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
    assert "packages" in run("show", "web") and "{" not in run("show", "web")  # not JSON
    assert json.loads(run("show", "web", "--json"))["results"]["os"]["value"]["hostname"] == "b"
    assert "value-changed" in run("drift", "web")
    csv = run("drift", "--format", "csv").splitlines()
    assert len(csv) == 2 and "value-changed" in csv[1]
    assert len(run("export", "--format", "jsonl").splitlines()) == 2
    assert "value-changed" in run("drift", "--since", "1h")
    bad = subprocess.run([*GP, "drift", "--since", "yesterday-ish", "--store", str(db)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_read_commands_create_nothing_and_refuse_unknown_vms(tmp_path: Path) -> None:
    """A read command never writes: a missing store is a one-line error (exit 2)
    with no folder or file made; an unknown VM is exit 2 as well."""
    env = {**os.environ, "GUESTPOOL_DATA_DIR": str(tmp_path / "data")}
    missing = tmp_path / "nowhere" / "x.db"
    for args in (["report"], ["vms"], ["show", "web"], ["drift"], ["export"],
                 ["export", "--format", "cyclonedx", "web"]):
        for store in (["--store", str(missing)], []):  # named, and the default one
            r = subprocess.run([*GP, *args, *store], capture_output=True, text=True, env=env)
            assert r.returncode == 2, (args, store, r.stderr)
            assert r.stderr.count("\n") == 1 and "no results store at" in r.stderr, r.stderr
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "data").exists()
    db = tmp_path / "r.db"
    store = Store(db)
    store.record(store.start_round(60, "pooled", 1, 1), InspectResult("web", True, {}))
    store.close()
    for args in (["show", "nosuchvm"], ["drift", "nosuchvm"], ["export", "nosuchvm"],
                 ["export", "web", "--vm", "nosuchvm"]):
        r = subprocess.run([*GP, *args, "--store", str(db)], capture_output=True, text=True)
        assert r.returncode == 2 and "no VM 'nosuchvm'" in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("text", ["[", "]", "[/x]", "[bold]b[/bold]", "a[/b]c"])
def test_errors_and_guest_strings_print_literally(tmp_path: Path, text: str) -> None:
    """Rich markup is off everywhere: an error naming a path with brackets is one
    line (not a MarkupError traceback), and a VM name or hostname a guest or
    manifest chose is shown as it is."""
    fleet = tmp_path / f"a{text}b" / "fleet.json"
    r = subprocess.run([*GP, "scan", str(fleet)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and str(fleet) in r.stderr, r.stderr
    db = tmp_path / "r.db"
    store = Store(db)
    value = {"os": {"inspector": "os", "version": "1", "ok": True,
                    "value": {"hostname": f"h{text}", "distro": "debian"}}}
    store.record(store.start_round(60, "pooled", 1, 1), InspectResult(f"vm{text}", True, value))
    store.close()
    wide = {**os.environ, "COLUMNS": "200"}
    for args in (["vms"], ["show", f"vm{text}"], ["report"]):
        r = subprocess.run([*GP, *args, "--store", str(db)], capture_output=True, text=True,
                           env=wide)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
        assert f"vm{text}" in r.stdout or args == ["report"], (args, r.stdout)
    assert f"h{text}" in subprocess.run([*GP, "show", f"vm{text}", "--store", str(db)],
                                        capture_output=True, text=True, env=wide).stdout


@pytest.mark.appliance
def test_monitor_runs_rounds_and_stops_cleanly_on_sigterm(demo_fleet: DemoFleet,
                                                          tmp_path: Path) -> None:
    """Between rounds: SIGTERM ends the wait at once."""
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [dataclasses.replace(v, trust_group="default")
                              for v in demo_fleet.vms[:3]])
    proc = subprocess.Popen([*GP, "monitor", str(manifest), "--interval", "60", "--budget", "60",
                             "--pool", "1", "--inspectors", "hostname", "--store",
                             str(tmp_path / "m.db"), "--allow-path",
                             str(demo_fleet.manifest.parent)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        line = wait_for_line(proc.stderr, "round 1:", 240)
        assert "covered 3" in line, line
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - start < 30
    finally:
        proc.kill()
        proc.wait()
    store = Store(tmp_path / "m.db")
    assert store.last_round()["summary"]["covered"] == 3


@pytest.mark.parametrize("command, sig, code", [("monitor", signal.SIGINT, 0),
                                               ("monitor", signal.SIGTERM, 0),
                                               ("scan", signal.SIGTERM, 3)])
def test_a_signal_mid_job_lets_it_finish(command: str, sig: signal.Signals, code: int,
                                         demo_fleet: DemoFleet, tmp_path: Path) -> None:
    """A signal while a job is in flight: that job finishes and is stored, no new job
    starts, the round is closed with its summary; monitor exits 0, scan 3 (VMs not
    reached)."""
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [dataclasses.replace(v, trust_group="default")
                              for v in demo_fleet.vms[:4]])
    db = tmp_path / "m.db"
    interval = ["--interval", "300"] if command == "monitor" else []
    proc = subprocess.Popen([*GP, command, str(manifest), *interval, "--budget",
                             "300", "--pool", "1", "--batch", "1",  # one VM per job
                             "--inspectors", "testinspectors:Slow",
                             "--store", str(db), "--allow-path", str(demo_fleet.manifest.parent)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 240
        while _results(db) < 1:  # one 8 s job done: the next one is in flight
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
    finally:
        proc.kill()
        proc.wait()
    summary = Store(db).last_round()["summary"]
    assert summary["covered"] == 2 and summary["stopped_early"], summary
    assert summary["not_reached"] == 2


def _results(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_exit_codes_for_failed_and_unreached_vms(tmp_path: Path, demo_fleet: DemoFleet) -> None:
    """Exit 3 when the budget ends before every VM; 1 when VMs failed."""
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [dataclasses.replace(v, trust_group="default")
                              for v in demo_fleet.vms[:2]])
    r = subprocess.run([*GP, "scan", str(manifest), "--budget", "5", "--pool", "1",
                        "--store", str(tmp_path / "a.db"), "--allow-path",
                        str(demo_fleet.manifest.parent)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3, r.stderr[-2000:]  # no appliance boots within 5 s here
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"vms": [
        {"name": "gone", "disks": [{"path": "gone.qcow2", "format": "qcow2"}]}]}))
    r = subprocess.run([*GP, "scan", str(broken), "--budget", "120", "--pool", "1",
                        "--store", str(tmp_path / "b.db")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "does not exist" in r.stdout + r.stderr


def test_plan_prints_the_capacity_plan_without_scanning(tmp_path: Path) -> None:
    from helpers.server import tiny_manifest

    r = subprocess.run([*GP, "scan", str(tiny_manifest(tmp_path)), "--plan", "--json",
                        "--budget", "300", "--pool", "2", "--store", str(tmp_path / "p.db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["vms"] == 2 and plan["pool_size"] == 2 and plan["fits"] is True
    assert plan["measured"] is False and plan["predicted"] == 2
    assert Store(tmp_path / "p.db").last_round() is None  # nothing was scanned


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
