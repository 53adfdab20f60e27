"""Drift: what changed in a VM between two inspections, as structured changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Change = dict[str, Any]  # {"inspector", "kind", "key", "before", "after"}


def _pkg_versions(value: Any) -> dict[str, str]:
    out = {}
    for p in (value or {}).get("packages", []):
        v = f"{p.get('version')}-{p.get('release')}" if p.get("release") else str(p.get("version"))
        out[f"{p['name']}:{p.get('arch', '')}"] = f"{p['epoch']}:{v}" if p.get("epoch") else v
    return out


def _users(value: Any) -> dict[str, Any]:
    value = value or {}
    out: dict[str, Any] = {f"account:{a['name']}": {"uid": a["uid"], "shell": a.get("shell")}
                           for a in value.get("accounts", [])}
    for user, keys in (value.get("authorized_keys") or {}).items():
        for k in keys:
            out[f"key:{user}:{k.get('fingerprint')}"] = k.get("type")
    for g in value.get("sudoers", []):
        out[f"sudo:{g['rule']}"] = g["file"]
    return out


def _files(value: Any) -> dict[str, Any]:
    return {path: e.get("sha256", e.get("error")) for path, e in (value or {}).items()}


def _filesystems(value: Any) -> dict[str, Any]:
    return {f["device"]: {k: f.get(k) for k in ("type", "uuid", "label", "size")}
            for f in value or []}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True, default=str)}
    return {prefix: value}


# inspector -> (key extractor, noun used in change kinds)
_EXTRACTORS: dict[str, tuple[Callable[[Any], dict[str, Any]], str]] = {
    "packages": (_pkg_versions, "package"),
    "users": (_users, "user"),
    "files": (_files, "file"),
    "filesystems": (_filesystems, "filesystem"),  # used/free move all the time: not drift
}


def diff(inspector: str, before: Any, after: Any) -> list[Change]:
    """Changes of one inspector's value between two inspections."""
    extract, noun = _EXTRACTORS.get(inspector, (_flatten, "value"))
    old, new = extract(before), extract(after)
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
