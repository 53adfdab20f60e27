"""The one schema of a VM entry (manifest JSON or TOML): types checked, nothing coerced.

A manifest is input from outside: ``"live": "false"`` must not become True,
``"tags": "web"`` must not become three tags, and a VM name is printed in
progress lines, tables and CSV, so it may not hold a line break, a control
character, ``/`` or ``..``. Every refusal names the field (:class:`FieldError`);
the manifest loader adds the file and the VM.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

from guestpool._errors import FleetError

FORMATS = ("raw", "qcow2")
FIELDS = {"name", "disks", "tags", "trust_group", "priority", "clone_of", "live", "keys"}
MAX_NAME = 255
MAX_DISKS = 64
MAX_TAGS = 64
MAX_PATH = 4096
#: character classes a printable name may not hold: controls, format characters
#: (bidi overrides), surrogates, private use, unassigned, line and paragraph separators
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class FieldError(FleetError):
    """A VM entry's field is wrong: ``field`` names it (``disks[1].format``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_name(value: object, field: str = "name") -> str:
    """A name shown to people and used as an identity: 1–255 printable characters,
    no ``/``, no ``..``, no leading or trailing space."""
    if not isinstance(value, str):
        raise FieldError(field, f"must be a string, got {_kind(value)}")
    if not value or len(value) > MAX_NAME:
        raise FieldError(field, f"must be 1 to {MAX_NAME} characters, got {len(value)}")
    bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        raise FieldError(field, f"must be printable, holds U+{ord(bad):04X}")
    if "/" in value or ".." in value or value == ".":
        raise FieldError(field, f"may not hold '/' or '..', got {value[:80]!r}")
    if value != value.strip():
        raise FieldError(field, f"may not start or end with a space, got {value[:80]!r}")
    return value


def parse_vm(d: object, base: Path | None = None) -> dict[str, Any]:
    """The fields of a VM from one manifest entry, checked; relative disk and key
    paths are taken from ``base``. Raises :class:`FieldError`."""
    if not isinstance(d, dict):
        raise FieldError("entry", f"must be an object, got {_kind(d)}")
    unknown = sorted(str(k) for k in d if k not in FIELDS)
    if unknown:
        raise FieldError(repr(unknown[0])[:80], "is not a field of a VM (fields: "
                                                f"{', '.join(sorted(FIELDS))})")
    if "name" not in d:
        raise FieldError("name", "is required")
    out: dict[str, Any] = {"name": check_name(d["name"])}
    out["disks"] = tuple(_disk(x, i, base) for i, x in enumerate(_list(d, "disks", MAX_DISKS)))
    if not out["disks"]:
        raise FieldError("disks", "must name at least one disk")
    out["tags"] = tuple(check_name(t, f"tags[{i}]")
                        for i, t in enumerate(_list(d, "tags", MAX_TAGS, required=False)))
    out["trust_group"] = check_name(d.get("trust_group", "default"), "trust_group")
    priority = d.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > 10**6:
        raise FieldError("priority", f"must be a whole number within ±1000000, got "
                                     f"{_kind(priority)}")
    out["priority"] = priority
    out["clone_of"] = None if d.get("clone_of") is None else check_name(d["clone_of"],
                                                                        "clone_of")
    live = d.get("live", False)
    if not isinstance(live, bool):
        raise FieldError("live", f"must be true or false, got {_kind(live)}")
    out["live"] = live
    out["keys"] = _list(d, "keys", MAX_DISKS, required=False)
    return out


def _list(d: dict[str, Any], field: str, most: int, required: bool = True) -> list[Any]:
    if field not in d:
        if required:
            raise FieldError(field, "is required")
        return []
    value = d[field]
    if not isinstance(value, list):
        raise FieldError(field, f"must be a list, got {_kind(value)}")
    if len(value) > most:
        raise FieldError(field, f"may hold at most {most} entries, got {len(value)}")
    return value


def _disk(x: object, i: int, base: Path | None) -> tuple[str, str]:
    field = f"disks[{i}]"
    if not isinstance(x, dict):
        raise FieldError(field, f"must be an object with path and format, got {_kind(x)}")
    extra = sorted(str(k) for k in x if k not in ("path", "format"))
    if extra:
        raise FieldError(f"{field}.{extra[0]!r:.80}", "is not a field of a disk (path, format)")
    path, fmt = x.get("path"), x.get("format")
    if not isinstance(path, str) or not path or "\0" in path or len(path) > MAX_PATH:
        raise FieldError(f"{field}.path", f"must be a file path, got {_kind(path)}")
    if fmt not in FORMATS:
        raise FieldError(f"{field}.format", f"must be one of {', '.join(FORMATS)} (declared, "
                                            f"never probed), got {_kind(fmt)}")
    p = Path(path)
    if base is not None and not p.is_absolute():
        p = base / p
    return str(p), str(fmt)


def _kind(value: object) -> str:
    """How a wrong value reads in an error: its type, and a short repr of a scalar."""
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"

