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
            w.writerow({k: _cell(v) for k, v in r.items()})
        return buf.getvalue()
    raise GuestpoolError(f"unknown export format {fmt!r}: use jsonl or csv")


#: what makes a spreadsheet read a cell as a formula (OWASP's CSV injection list)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """Nested values as JSON; a text that a spreadsheet would run as a formula (a
    guest's hostname, a package's name: guest bytes) quoted with a leading ``'``."""
    if isinstance(value, dict | list):
        value = to_json(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
