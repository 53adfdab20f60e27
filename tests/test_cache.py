"""Caches several guestpool processes build at once (the corpus, the LVM header, the
accelerator verdict, a demo fleet's folder) are built once, under a lock, and
published whole: real processes, real locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guestpool._cache import folder_once, write_atomically
from guestpool.demo._kinds import HARD_KINDS, plan


def _slow_build(target: str, log: str) -> None:
    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        (tmp / "half").write_text("1")
        time.sleep(0.5)  # the other process arrives while this one builds
        (tmp / "whole").write_text("2")

    folder_once(Path(target), build)
    assert (Path(target) / "whole").read_text() == "2"  # never a half-built folder


def test_two_processes_build_a_folder_once(tmp_path: Path) -> None:
    target, log = tmp_path / "cache" / "corpus", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(str(target), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1  # one built, the other waited and reused it
    assert sorted(x.name for x in target.iterdir()) == [".done", "half", "whole"]
    assert [x.name for x in target.parent.iterdir() if x.is_dir()] == ["corpus"]  # no temp


def test_a_failed_build_publishes_nothing_and_the_next_call_builds(tmp_path: Path) -> None:
    target = tmp_path / "c"

    def broken(tmp: Path) -> None:
        (tmp / "x").write_text("")
        raise RuntimeError("qemu died")

    with pytest.raises(RuntimeError):
        folder_once(target, broken)
    assert not target.exists() and [x.name for x in tmp_path.iterdir() if x.is_dir()] == []
    # a folder left by a build killed before builds were published by rename
    target.mkdir()
    (target / "stale").write_text("")
    assert folder_once(target, lambda tmp: (tmp / "new").write_text(""))
    assert sorted(x.name for x in target.iterdir()) == [".done", "new"]
    assert not folder_once(target, broken)  # built: nothing runs


def test_an_atomic_write_never_shows_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "accel.json"
    write_atomically(path, b'{"a": 1}')
    write_atomically(path, b'{"a": 2}')
    assert path.read_bytes() == b'{"a": 2}' and [p.name for p in tmp_path.iterdir()] == [
        "accel.json"]


@pytest.mark.appliance
def test_two_demo_fleets_built_at_once_from_an_empty_cache(tmp_path: Path) -> None:
    """Two `fleet demo` runs started together with a new cache: the first builds the
    corpus and the LVM header (appliances), the second waits; both fleets are whole
    and equal."""
    env = {**os.environ, "GUESTPOOL_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.Popen([sys.executable, "-m", "guestpool", "fleet", "demo",
                              str(tmp_path / name), "--count", "25"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("one", "two")]
    outs = [r.communicate(timeout=900) for r in runs]
    for r, (_, err) in zip(runs, outs, strict=True):
        assert r.returncode == 0, err
        assert "Traceback" not in err
    truth = [json.loads((tmp_path / name / "truth.json").read_text()) for name in ("one", "two")]
    assert truth[0] == truth[1]
    hard = plan(25)[-1]  # the one VM made from the corpus
    assert hard.kind in HARD_KINDS and truth[0][hard.name]["kind"] == hard.kind
    corpus = [p for p in (tmp_path / "cache" / "corpus").iterdir() if p.is_dir()]
    assert len(corpus) == 1 and (corpus[0] / ".done").exists()  # one build, no leftovers
