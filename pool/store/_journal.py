"""Results the store could not take, kept in a journal and written at the next start.

A round does not wait for a locked or full store: what is still unwritten at its
end is appended to ``STORE.journal`` beside the store (or, if that disk is full
too, to a file named after the store in this user's cache folder). The
next round, or the service at start, replays every journal of its store and
removes it once every line is committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from guestpool._cache import build_lock
from guestpool._paths import cache_dir

from ._database import Store, to_json
from ._results import InspectResult
from ._transactions import StoreError, reporting

log = logging.getLogger(__name__)
_FIELDS = {f.name for f in dataclasses.fields(InspectResult)}


def journal_paths(store_path: Path) -> list[Path]:
    """Where a store's journal may be: beside it, then this user's own cache folder
    (another disk, usually; never a shared temporary folder another user could
    write a forged journal into)."""
    digest = hashlib.sha256(str(store_path.resolve()).encode()).hexdigest()[:16]
    fallback = cache_dir(create=False) / "journal" / f"{store_path.name}-{digest}"
    return [store_path.with_name(store_path.name + ".journal"), fallback]


def entry(round_id: int | None, result: InspectResult, context: str | None,
          kind: str | None, at: float | None = None) -> dict[str, Any]:
    """One journal line: what ``Store.record`` would have been given, with the
    time the result came (stored as its time, not the replay's)."""
    fields = {k: v for k, v in result.to_dict().items() if k in _FIELDS}
    return {"round": round_id, "context": context, "kind": kind, "result": fields,
            "at": time.time() if at is None else at}


def end_entry(round_id: int, at: float, summary: dict[str, Any]) -> dict[str, Any]:
    """One journal line closing a round whose end the store did not take."""
    return {"end_round": round_id, "at": at, "summary": summary}


def spool(store_path: Path, entries: Iterable[dict[str, Any]]) -> Path:
    """Append ``entries`` to the store's journal; returns where they went. Raises
    OSError only when neither place can be written."""
    lines = "".join(to_json(e) + "\n" for e in entries)
    error: OSError | None = None
    for path in journal_paths(store_path):
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with build_lock(path):  # never beside a replay of the same journal
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o600)
                with os.fdopen(fd, "a") as f:
                    f.write(lines)
                    f.flush()
                    os.fsync(f.fileno())
            return path
        except OSError as e:
            error = e
    assert error is not None
    raise error


def pending(store_path: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    """The journals of a store with their entries (a torn last line is skipped)."""
    found = []
    for path in journal_paths(store_path):
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                log.warning("journal %s: a torn line skipped", path)
        found.append((path, entries))
    return found


def result_of(e: dict[str, Any]) -> InspectResult:
    return InspectResult(**{k: v for k, v in e["result"].items() if k in _FIELDS})


def replay(store: Store) -> int:
    """Write the results rounds kept in ``store``'s journal while it was locked or
    full, each once, and the ends of rounds it did not take; remove the journal
    when all are in. An entry the store refuses for itself (not for a lock) is
    moved to ``JOURNAL.rejected`` and named in a warning. Returns how many
    results were written."""
    written = 0
    for path, _ in pending(store.path):
        with build_lock(path):  # one replay at a time, and no spool meanwhile
            entries = next((e for p, e in pending(store.path) if p == path), [])
            for e in entries:
                try:
                    written += _replay_one(store, e)
                except StoreError as err:
                    if err.busy:
                        raise
                    _reject(path, e, err)
                except (KeyError, TypeError, ValueError, AttributeError) as err:
                    _reject(path, e, err)
            path.unlink(missing_ok=True)
        log.warning("%d results kept in %s while the store was unusable are now stored",
                    written, path)
    return written


def _replay_one(store: Store, e: dict[str, Any]) -> int:
    if "end_round" in e:  # a round whose end could not be stored
        with reporting(store.path):
            store.db.execute("UPDATE rounds SET ended=?, summary=? WHERE id=? AND ended IS NULL",
                             (e["at"], to_json(e["summary"]), e["end_round"]))
        return 0
    result = result_of(e)
    if store.has_result(e["round"], result.vm):
        return 0
    at = e.get("at")
    if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
        raise TypeError(f"'at' is not a time: {at!r}")
    store.record(e["round"], result, e["context"], e["kind"], once=True, at=at)
    return 1


def _reject(path: Path, e: dict[str, Any], error: Exception) -> None:
    rejected = path.with_name(path.name + ".rejected")
    with open(rejected, "a") as f:
        f.write(to_json({**e, "rejected": str(error)}) + "\n")
    log.warning("journal %s: an entry the store refuses (%s) moved to %s", path, error,
                rejected)
