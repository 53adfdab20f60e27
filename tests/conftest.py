"""Shared fixtures: one demo fleet and one real pool for the whole session.

Real appliances boot in ~20 s here (TCG), so the pool runs once, in a
background thread with its own trio loop, and tests submit jobs to it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet
from helpers.pool_thread import PoolThread

PLUGINS = str(Path(__file__).parent / "plugins")
sys.path.insert(0, PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def demo_fleet(tmp_path_factory: pytest.TempPathFactory) -> DemoFleet:
    return DemoFleet(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="session")
def shared_pool() -> Iterator[PoolThread]:
    pt = PoolThread(size=2, max_jobs=1000)
    yield pt
    pt.close()
