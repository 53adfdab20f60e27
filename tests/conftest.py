"""Shared fixtures: one demo fleet and one real pool for the whole session.

Real appliances boot in ~20 s here (TCG), so the pool runs once, in a
background thread with its own trio loop, and tests submit jobs to it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.corpus import Corpus
from helpers.fleet import DemoFleet, sha256
from helpers.pool_thread import PoolThread

PLUGINS = str(Path(__file__).parent / "plugins")
sys.path.insert(0, PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def demo_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoFleet]:
    fleet = DemoFleet(tmp_path_factory.mktemp("fleet"))
    yield fleet
    # every test has run: not one byte of any demo image may have changed
    changed = [p for p, digest in fleet.digests.items() if sha256(p) != digest]
    assert not changed, f"images changed by the test session: {changed}"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """The fidelity corpus (pool/demo/_corpus.py): hard layouts with their expected.json."""
    built = Corpus(tmp_path_factory.mktemp("corpus"))
    yield built
    changed = [p for p, digest in built.digests.items() if sha256(p) != digest]
    assert not changed, f"corpus images changed by the test session: {changed}"


@pytest.fixture(scope="session")
def shared_pool() -> Iterator[PoolThread]:
    pt = PoolThread(size=2, max_jobs=1000)
    yield pt
    pt.close()


@pytest.fixture(scope="session")
def scanned_store(tmp_path_factory: pytest.TempPathFactory, demo_fleet: DemoFleet,
                  shared_pool: PoolThread) -> tuple[Path, dict[str, str]]:
    """A store holding one small real scan (see helpers/real_scan.py) and its VMs by kind."""
    from helpers.real_scan import scan_into

    path = tmp_path_factory.mktemp("scanned") / "scan.db"
    return path, scan_into(path, demo_fleet, shared_pool)


# -- markers that tell the truth ---------------------------------------------------------
#
# The demo fleet builds its LVM header (the corpus: its LUKS, md and LVM disks) with an
# appliance when the cache is empty, so every test that uses it (or the shared pool) is
# an appliance test. Fast tests run first, so a broken build fails in seconds, not after
# the appliance tests.

APPLIANCE_FIXTURES = {"demo_fleet", "shared_pool", "corpus"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if APPLIANCE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.appliance)
    items.sort(key=lambda item: item.get_closest_marker("appliance") is not None)


# -- a run without appliances proves it booted none ---------------------------------------

_TRIPWIRE: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """With ``-m "not appliance"``, qemu is replaced by a tripwire for this run and its
    subprocesses: anything that tries to start a VM fails, and the run fails with it."""
    global _TRIPWIRE
    if "not appliance" not in (config.option.markexpr or ""):
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gp-tripwire-"))
    script = folder / "tripwire"
    script.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {folder}/started\nexit 1\n")
    script.chmod(0o755)
    for name in ("qemu-system-x86_64", "qemu-system-aarch64", "qemu-kvm"):
        (folder / name).symlink_to(script)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ['PATH']}"
    os.environ["LIBGUESTFS_HV"] = str(script)
    _TRIPWIRE = folder


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _TRIPWIRE is not None and (_TRIPWIRE / "started").exists():
        started = (_TRIPWIRE / "started").read_text()
        session.config.get_terminal_writer().line(
            f"a qemu was started during a `not appliance` run:\n{started}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TRIPWIRE is not None:
        shutil.rmtree(_TRIPWIRE, ignore_errors=True)
