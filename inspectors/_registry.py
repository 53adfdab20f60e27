"""Finding inspectors: built-ins, ``module:Class`` paths, and installed plugins
(entry-point group ``guestpool.inspectors``), and running them on one guest."""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from guestpool._errors import InspectorError

from ._api import Inspector
from ._builtin import FilesystemsInspector, HostnameInspector, OSInspector
from ._files import DeadlineExceeded
from ._guest import Guest
from ._inventory import FilesInspector, PackagesInspector, ServicesInspector, UsersInspector
from ._specs import InspectorSpec, encoded_size

#: The built-in inspectors: a new one is a module plus a line here.
BUILTINS: tuple[type[Inspector], ...] = (
    OSInspector,
    FilesystemsInspector,
    HostnameInspector,
    PackagesInspector,
    UsersInspector,
    FilesInspector,
    ServicesInspector,
)

ENTRY_POINT_GROUP = "guestpool.inspectors"
DEFAULT_INSPECTORS = ("os", "filesystems")
#: Largest value one inspector may return (bytes on the wire). Guest data is
#: hostile: a reply past the frame limit would cost the VM every result.
MAX_VALUE_BYTES = 8 * 1024 * 1024
#: Deadline of a plugin that could not be loaded (it fails at once in the worker).
_BROKEN_DEADLINE = 60.0


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


def resolve_specs(choices: Sequence[str | InspectorSpec] | None = None, *,
                  allow_paths: bool = True) -> tuple[InspectorSpec, ...]:
    """The user's inspector choices as validated specs, once, where they were made.

    A choice is a registered name, a ``module:Class`` path (only with
    ``allow_paths``: a path imports code, so the HTTP API never accepts one), or
    an :class:`InspectorSpec` with options. Unknown names and bad options raise
    :class:`InspectorError`. A ``module:Class`` that cannot be loaded is kept: the
    worker turns it into an error entry naming the plugin, and the other
    inspectors of every VM still run.
    """
    out: list[InspectorSpec] = []
    for choice in DEFAULT_INSPECTORS if choices is None else choices:
        spec = InspectorSpec(choice) if isinstance(choice, str) else choice
        if ":" in spec.name and not allow_paths:
            raise InspectorError(f"inspector {spec.name!r}: only registered inspector names "
                                 "are accepted here, not module:Class paths")
        try:
            cls = resolve(spec.name)
        except InspectorError:
            if ":" not in spec.name:
                raise
            out.append(InspectorSpec(spec.name, dict(spec.options), _BROKEN_DEADLINE))
            continue
        cls.make_options(spec.options)
        deadline = spec.deadline if spec.deadline is not None else cls.deadline
        out.append(InspectorSpec(spec.name, dict(spec.options), float(deadline)))
    if len({s.name for s in out}) != len(out):
        raise InspectorError("an inspector is named twice")
    return tuple(out)


def run_inspectors(guest: Guest, specs: Sequence[InspectorSpec]) -> dict[str, dict[str, Any]]:
    """Run each inspector with its own deadline; one failing keeps the others' results.

    Each result is ``{"inspector", "version", "ok", "value" | "error", "seconds"}``.
    """
    results: dict[str, dict[str, Any]] = {}
    for spec in specs:
        start = time.monotonic()
        entry: dict[str, Any] = {"inspector": spec.name, "version": None, "ok": False}
        try:
            cls = resolve(spec.name)
            entry.update(inspector=cls.name, version=cls.version)
            options = cls.make_options(spec.options)
            guest.set_deadline(spec.deadline or _BROKEN_DEADLINE)
            value = cls().run(guest, options)
            _check_value(spec.name, value)
            entry.update(ok=True, value=value)
        except DeadlineExceeded:
            entry["error"] = {"kind": "deadline", "message": f"{spec.name}: ran past its deadline"}
        except InspectorError as e:
            entry["error"] = {"kind": "inspector", "message": str(e)[:500]}
        except RuntimeError as e:  # guestfs errors: the guest's data or layout
            entry["error"] = {"kind": "guest", "message": f"{spec.name}: {e}"[:500]}
        except Exception as e:
            entry["error"] = {"kind": "inspector",
                              "message": f"{spec.name}: {type(e).__name__}: {e}"[:500]}
        finally:
            guest.set_deadline(float("inf"))
        entry["seconds"] = round(time.monotonic() - start, 4)
        results[entry["inspector"]] = entry
    return results


def _check_value(name: str, value: Any) -> None:
    try:
        size = encoded_size(value)
    except TypeError as e:
        raise InspectorError(f"{name}: returned data that cannot be stored ({e})") from e
    if size > MAX_VALUE_BYTES:
        raise InspectorError(f"{name}: result of {size} bytes is over the "
                             f"{MAX_VALUE_BYTES}-byte limit (a hostile or huge guest?)")
