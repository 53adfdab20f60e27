"""Change-aware rounds with a real appliance: a second round verifies a tiny fleet
unchanged without booting, and a file changed inside one image is re-inspected
with its drift."""

from __future__ import annotations

from pathlib import Path

import pytest

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
