"""Findings as history: match a round's VMs against the OSV folder, store the
findings and their drift (``finding-new`` / ``finding-fixed``).

The index of a folder is built once per process and rebuilt only when the
folder's files change (their names, sizes and mtimes), so monitor and serve
rounds pay for it once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from guestpool._errors import GuestpoolError
from guestpool.store._database import Store
from guestpool.store._drift import Change

from . import _matching as _vulns
from ._osv import Limits, how_to_fill

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[tuple[str, int, int], ...], _vulns.OsvIndex]] = {}


def check_folder(folder: str | Path) -> str:
    """The folder as an absolute path; GuestpoolError (saying how to fill it)
    when it does not exist. Cheap: for option checks before any boot."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise GuestpoolError(f"OSV folder {folder} does not exist: {how_to_fill(folder)}")
    return str(path)


def signature(folder: str | Path, limit: int = Limits().max_files
              ) -> tuple[tuple[str, int, int], ...]:
    """What says the folder's advisories changed: every zip's and JSON file's
    path, size and mtime (bounded like the reader)."""
    out: list[tuple[str, int, int]] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.endswith((".zip", ".json")):
                try:
                    st = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                out.append((os.path.join(root, name), st.st_size, st.st_mtime_ns))
                if len(out) >= limit:
                    return tuple(out)
    return tuple(out)


def index_for(folder: str | Path) -> _vulns.OsvIndex:
    """The index of ``folder``, built on first use and again when its files
    change. CPU-bound: call it from a worker thread in async code."""
    key = check_folder(folder)
    sig = signature(key)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        index = _vulns.load_osv(key)
        _cache[key] = (sig, index)
        return index


def all_vms(store: Store, page: int = 1000) -> Iterator[str]:
    """Every VM the store knows, by name, read a page at a time."""
    offset = 0
    while True:
        rows = store.vms_page(page, offset)
        yield from (r["name"] for r in rows)
        if len(rows) < page:
            return
        offset += page


def match_latest(store: Store, index: _vulns.OsvIndex, vms: Iterable[str]
                 ) -> list[_vulns.VmFindings]:
    """Findings of each VM's latest stored result (VMs never scanned left out)."""
    return _vulns.match_fleet(index, (store.latest(v) for v in vms))


def record_round(store: Store, round_id: int | None, index: _vulns.OsvIndex,
                 vms: Iterable[str]) -> tuple[list[_vulns.VmFindings], list[Change]]:
    """Match ``vms`` (the ones a round covered), store their findings with the
    round and return them with the findings' drift (also stored, per VM, as
    changes of inspector ``vulns``). A skipped VM has no drift: a round
    without the packages inspector does not make every finding "fixed"."""
    reports = match_latest(store, index, vms)
    by_vm: dict[str, list[Change]] = {}
    for report in reports:
        if report["skipped"] is not None:
            continue
        before = store.last_findings(report["vm"])
        if before is None:
            continue  # first match: a baseline, not drift
        changes = _vulns.diff_findings(before, report["findings"])
        if changes:
            by_vm[report["vm"]] = changes
    store.record_findings(round_id, reports, by_vm)
    flat = [{"vm": vm, **c} for vm, cs in by_vm.items() for c in cs]
    return reports, flat


def fleet_view(index: _vulns.OsvIndex, reports: list[_vulns.VmFindings]) -> dict[str, Any]:
    """What ``guestpool vulns --json`` and ``GET /vulns`` answer."""
    return {"osv": osv_info(index), "counts": _vulns.severity_counts(reports),
            "advisories": _vulns.fleet_table(reports), "vms": reports}


def osv_info(index: _vulns.OsvIndex) -> dict[str, Any]:
    return {"folder": str(index.folder), "advisories": index.advisories,
            "ecosystems": dict(sorted(index.ecosystems.items())),
            "newest": index.newest.isoformat() if index.newest else None,
            "stale": _vulns.staleness(index), "warnings": dict(index.warnings)}
