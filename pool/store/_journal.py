"""Results the store could not take, kept in a journal and written at the next start.

A round does not wait for a locked or full store: what is still unwritten at its
end is appended to ``STORE.journal`` beside the store (or, if that disk is full
too, to a file named after the store in ``$TMPDIR/guestpool-journal``). The
next round, or the service at start, replays every journal of its store and
removes it once every line is committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._database import Store
from ._results import InspectResult

log = logging.getLogger(__name__)
_FIELDS = {f.name for f in dataclasses.fields(InspectResult)}


def journal_paths(store_path: Path) -> list[Path]:
    """Where a store's journal may be: beside it, then the fallback folder."""
    digest = hashlib.sha256(str(store_path.resolve()).encode()).hexdigest()[:16]
    fallback = Path(tempfile.gettempdir()) / "guestpool-journal" / f"{store_path.name}-{digest}"
    return [store_path.with_name(store_path.name + ".journal"), fallback]


def entry(round_id: int | None, result: InspectResult, context: str | None,
          kind: str | None) -> dict[str, Any]:
    """One journal line: what ``Store.record`` would have been given."""
    fields = {k: v for k, v in result.to_dict().items() if k in _FIELDS}
    return {"round": round_id, "context": context, "kind": kind, "result": fields}


def end_entry(round_id: int, at: float, summary: dict[str, Any]) -> dict[str, Any]:
    """One journal line closing a round whose end the store did not take."""
    return {"end_round": round_id, "at": at, "summary": summary}


def spool(store_path: Path, entries: Iterable[dict[str, Any]]) -> Path:
    """Append ``entries`` to the store's journal; returns where they went. Raises
    OSError only when neither place can be written."""
    lines = "".join(json.dumps(e) + "\n" for e in entries)
    error: OSError | None = None
    for path in journal_paths(store_path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
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
    when all are in. Returns how many results were written."""
    written = 0
    for path, entries in pending(store.path):
        for e in entries:
            if "end_round" in e:  # a round whose end could not be stored
                store.db.execute("UPDATE rounds SET ended=?, summary=? WHERE id=? AND"
                                 " ended IS NULL", (e["at"], json.dumps(e["summary"]),
                                                    e["end_round"]))
                continue
            result = result_of(e)
            if not store.has_result(e["round"], result.vm):
                store.record(e["round"], result, e["context"], e["kind"])
                written += 1
        path.unlink()
        log.warning("%d results kept in %s while the store was unusable are now stored",
                    written, path)
    return written
