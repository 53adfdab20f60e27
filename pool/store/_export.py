"""Rows out of the store as JSON Lines or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from guestpool._errors import GuestpoolError

from ._database import to_json


def export(rows: Iterable[dict[str, Any]], fmt: str) -> str:
    """JSON Lines or CSV (nested values as JSON) of any row set."""
    rows = list(rows)
    if fmt == "jsonl":
        return "".join(to_json(r) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: to_json(v) if isinstance(v, dict | list) else v for k, v in r.items()})
        return buf.getvalue()
    raise GuestpoolError(f"unknown export format {fmt!r}: use jsonl or csv")
