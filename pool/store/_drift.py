"""Drift: what changed in a VM between two inspections, as structured changes.

Generic: each inspector says how its value breaks into keyed facts
(:meth:`Inspector.drift_keys`, a flattening by default) and what a fact is
called (``drift_noun``); this module compares the facts. A new inspector
needs no edit here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guestpool._errors import InspectorError
from guestpool.inspectors._api import Inspector
from guestpool.inspectors._registry import resolve

Change = dict[str, Any]  # {"inspector", "kind", "key", "before", "after"}


def _keys_of(inspector: str) -> tuple[Callable[[Any], dict[str, Any]], str]:
    try:
        cls: type[Inspector] = resolve(inspector)
    except InspectorError:  # a plugin no longer installed: compare its value as it is
        cls = Inspector
    return cls.drift_keys, cls.drift_noun


def diff(inspector: str, before: Any, after: Any) -> list[Change]:
    """Changes of one inspector's value between two inspections."""
    keys_of, noun = _keys_of(inspector)
    old, new = keys_of(before), keys_of(after)
    changes: list[Change] = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            kind = "added"
        elif key not in new:
            kind = "removed"
        elif old[key] != new[key]:
            kind = "changed"
        else:
            continue
        changes.append({"inspector": inspector, "kind": f"{noun}-{kind}", "key": key,
                        "before": old.get(key), "after": new.get(key)})
    return changes


def diff_results(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Changes across every inspector that succeeded both times with the same version."""
    changes: list[Change] = []
    for name, entry in after.items():
        prev = before.get(name)
        if not (prev and prev.get("ok") and entry.get("ok")):
            continue
        if prev.get("version") != entry.get("version"):
            changes.append({"inspector": name, "kind": "inspector-upgraded", "key": name,
                            "before": prev.get("version"), "after": entry.get("version")})
            continue
        changes += diff(name, prev.get("value"), entry.get("value"))
    return changes
