"""Finding inspectors: built-ins, ``module:Class`` paths, and installed plugins
(entry-point group ``guestpool.inspectors``)."""

from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import msgpack

from guestpool.errors import InspectorError

from .api import Inspector
from .builtin import BUILTINS
from .guest import DeadlineExceeded, Guest

ENTRY_POINT_GROUP = "guestpool.inspectors"
DEFAULT_INSPECTORS = ("os", "filesystems")


@dataclass(frozen=True)
class Found:
    cls: type[Inspector]
    source: str  # "builtin", "plugin:<dist>", "path"


def _check(obj: Any, where: str) -> type[Inspector]:
    if not (isinstance(obj, type) and issubclass(obj, Inspector)):
        raise InspectorError(f"{where} is not an Inspector subclass")
    for attr in ("name", "version"):
        if not isinstance(getattr(obj, attr, None), str):
            raise InspectorError(f"{where} has no string {attr!r}")
    return obj


def _load_path(spec: str) -> type[Inspector]:
    module, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as e:  # a plugin's import error must not stop the scan
        raise InspectorError(f"cannot load inspector {spec!r}: {type(e).__name__}: {e}") from e
    return _check(obj, spec)


def available() -> dict[str, Found]:
    """Every inspector this installation knows, by name. Broken plugins are skipped
    here (``guestpool inspectors list`` reports them via :func:`broken_plugins`)."""
    found = {cls.name: Found(cls, "builtin") for cls in BUILTINS}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = _check(ep.load(), f"plugin {ep.name!r} ({ep.value})")
        except Exception:
            continue
        found.setdefault(cls.name, Found(cls, f"plugin:{ep.dist.name if ep.dist else '?'}"))
    return found


def broken_plugins() -> dict[str, str]:
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _check(ep.load(), f"plugin {ep.name!r} ({ep.value})")
        except Exception as e:
            out[ep.name] = f"{type(e).__name__}: {e}"
    return out


def parse_names(text: str | None) -> list[str] | None:
    """``"os,packages"`` from a command line into names; None or empty means the defaults."""
    names = [s.strip() for s in (text or "").split(",") if s.strip()]
    return names or None


@functools.lru_cache(maxsize=256)
def resolve(spec: str) -> type[Inspector]:
    """An inspector class from a name or a ``module:Class`` path.

    Cached: it runs for every inspector of every VM, and listing the installed
    plugins reads every distribution's metadata. Failures are not cached, so a
    plugin installed later is found.
    """
    if ":" in spec:
        return _load_path(spec)
    known = available()
    if spec in known:
        return known[spec].cls
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=spec):
        return _check(ep.load(), f"plugin {spec!r}")
    raise InspectorError(f"unknown inspector {spec!r}; known: {', '.join(sorted(known))} "
                         "(or give module:Class)")


def run_inspectors(guest: Guest, specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run each inspector with its own deadline; one failing keeps the others' results.

    ``specs`` are ``{"spec": name-or-path, "options": {...}}``. Each result is
    ``{"inspector", "version", "ok", "value" | "error", "seconds"}``.
    """
    results: dict[str, dict[str, Any]] = {}
    for item in specs:
        spec = item["spec"]
        start = time.monotonic()
        entry: dict[str, Any] = {"inspector": spec, "version": None, "ok": False}
        try:
            cls = resolve(spec)
            entry.update(inspector=cls.name, version=cls.version)
            options = cls.make_options(item.get("options"))
            guest.set_deadline(float(item.get("deadline") or cls.deadline))
            value = cls().run(guest, options)
            try:
                msgpack.packb(value, use_bin_type=True)
            except Exception as e:
                raise InspectorError(f"{spec}: returned data that cannot be stored "
                                     f"({type(e).__name__}: {e})") from e
            entry.update(ok=True, value=value)
        except DeadlineExceeded:
            entry["error"] = {"kind": "deadline", "message": f"{spec}: ran past its deadline"}
        except InspectorError as e:
            entry["error"] = {"kind": "inspector", "message": str(e)}
        except RuntimeError as e:  # guestfs errors: the guest's data or layout
            entry["error"] = {"kind": "guest", "message": f"{spec}: {e}"[:500]}
        except Exception as e:
            entry["error"] = {"kind": "inspector",
                              "message": f"{spec}: {type(e).__name__}: {e}"[:500]}
        finally:
            guest.set_deadline(float("inf"))
        entry["seconds"] = round(time.monotonic() - start, 4)
        results[entry["inspector"]] = entry
    return results
