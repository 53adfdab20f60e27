"""Change-aware rounds with a real appliance: a second round verifies a tiny fleet
unchanged without booting, and a file changed inside one image is re-inspected
with its drift."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.fleet import DemoFleet
from helpers.server import AUTH, Server

from guestpool import VM, RoundOptions, Store, run_round
from guestpool.demo._images import image_from_tree
from guestpool.fleet._safety import SafetyPolicy

pytestmark = pytest.mark.appliance


def tree(root: Path, users: list[str]) -> Path:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    (root / "etc/hostname").write_text(f"{root.parent.name}\n")
    (root / "etc/passwd").write_text("".join(
        f"{u}:x:{1000 + i}:{1000 + i}::/home/{u}:/bin/sh\n" for i, u in enumerate(users)))
    return root


async def test_unchanged_rounds_boot_nothing_and_a_changed_image_shows_its_drift(
        tmp_path: Path) -> None:
    fleet = [VM(name, (image_from_tree(tree(tmp_path / name / "t1", ["root", "alice"]),
                                       tmp_path / name / "disk", 16),))
             for name in ("vm-a", "vm-b")]
    store = Store(tmp_path / "r.db")
    options = RoundOptions(budget=240, pool_size=1, inspectors=["hostname", "users"])
    pool = options.pool(SafetyPolicy())
    async with pool.warm():
        first = await run_round(fleet, options, store=store, pool=pool)
        assert [r.state for r in first.results] == ["inspected"] * 2, first.results
        assert first.boots == 1
        second = await run_round(fleet, options, store=store, pool=pool)
        assert [r.state for r in second.results] == ["unchanged"] * 2
        assert second.boots == 0 and second.elapsed < 5
        # one file changed inside vm-b's image: the image is written again
        image_from_tree(tree(tmp_path / "vm-b" / "t2", ["root", "alice", "eve"]),
                        tmp_path / "vm-b" / "disk", 16)
        third = await run_round(fleet, options, store=store, pool=pool)
    assert {r.vm: r.state for r in third.results} == {"vm-a": "unchanged", "vm-b": "inspected"}
    assert list(third.changed_disks) == ["vm-b"] and third.boots == 0
    added = [c for c in third.drift if c["kind"].endswith("-added")]
    assert [(c["inspector"], c["key"]) for c in added] == [("users", "account:eve")], third.drift
    assert store.vm_states()["vm-a"]["state"] == "unchanged"


async def test_after_two_change_aware_rounds_every_view_agrees(demo_fleet: DemoFleet,
                                                                tmp_path: Path) -> None:
    """Round 2 verifies every VM unchanged; `vms --json`, `report --json`, `show
    --json`, the console's /fleet JSON and overview all tell the same OS, package
    count, state `unchanged` and inspection time (the carried inspection's)."""
    vms = [v for v in demo_fleet.one_of_each() if demo_fleet.truth[v.name]["kind"] != "data"]
    store_path = tmp_path / "views.db"
    store = Store(store_path)
    options = RoundOptions(budget=240, pool_size=1, inspectors=["os", "packages"])
    pool = options.pool(SafetyPolicy())
    async with pool.warm():
        first = await run_round(vms, options, store=store, pool=pool)
        assert [r.state for r in first.results] == ["inspected"] * len(vms), first.results
        second = await run_round(vms, options, store=store, pool=pool)
    assert [r.state for r in second.results] == ["unchanged"] * len(vms)
    inspected = {r.vm: r for r in first.results}
    inspected_at = {vm: p["inspected_at"] for vm, p in store.fingerprints().items()}
    store.close()

    def cli(*args: str) -> Any:
        r = subprocess.run([sys.executable, "-m", "guestpool", *args, "--store",
                            str(store_path)], capture_output=True, text=True, check=True)
        return json.loads(r.stdout)

    table = {v["vm"]: v for v in cli("vms", "--json")["vms"]}
    report = cli("report", "--json")["fleet"]
    assert report["states"]["unchanged"] == len(vms)
    assert sum(d["vms"] for d in report["by_distro"] if d["distro"]) == len(vms)
    srv = Server(store_path, "--paused")
    try:
        c = httpx.Client(base_url=srv.url, headers=AUTH)
        web = {v["vm"]: v for v in c.get("/fleet", params={"format": "json",
                                                           "size": 200}).json()["vms"]}
        overview = c.get("/").text
    finally:
        srv.stop()
    assert f"{len(vms)} unchanged" in overview
    for name, r in inspected.items():
        os_ = r.results["os"]["value"]
        packages = r.results["packages"]["value"]["count"]
        show = cli("show", name, "--json")
        views = {"vms": (table[name]["distro"], table[name]["packages"], table[name]["state"],
                         table[name]["inspected_at"]),
                 "console": (web[name]["distro"], web[name]["packages"], web[name]["state"],
                             web[name]["inspected_at"]),
                 "show": (show["os"]["distro"], show["packages"]["count"], show["state"],
                          show["inspected_at"])}
        for view, seen in views.items():
            assert seen == (os_["distro"], packages, "unchanged", inspected_at[name]), (view,
                                                                                      name)
        assert show["verified_at"] > show["inspected_at"]
        assert show["history"][0]["state"] == "unchanged"
        assert show["timings"].get("job", 0) > 0  # the carried inspection's job, not the check
