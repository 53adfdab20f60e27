"""The inspector API: small, typed, and safe against hostile guests.

An inspector is a class with a ``name``, a ``version``, a ``description``, an
``Options`` dataclass (validated, with defaults) and a ``run(guest, options)``
that returns plain data (dicts, lists, str, int, float, bool, bytes, None).

    from dataclasses import dataclass
    from guestpool.inspectors import Inspector, Guest

    class Motd(Inspector):
        name = "motd"
        version = "1"
        description = "The message of the day"

        @dataclass
        class Options:
            max_bytes: int = 4096

        def run(self, guest: Guest, options: "Motd.Options") -> object:
            return guest.read_text("/etc/motd", max_bytes=options.max_bytes)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from guestpool._errors import InspectorError

if TYPE_CHECKING:
    from ._guest import Guest


class Inspector:
    """Base class of inspectors. Subclass it; keep ``run`` cheap and bounded."""

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    #: Seconds this inspector may take on one VM before it is stopped.
    deadline: ClassVar[float] = 60.0
    #: What one fact of this inspector's value is called in drift ("package-added").
    drift_noun: ClassVar[str] = "value"

    @dataclasses.dataclass
    class Options:
        pass

    def run(self, guest: Guest, options: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def drift_keys(value: Any) -> dict[str, Any]:
        """The value as keyed facts that drift compares between two inspections.

        The default flattens nested dicts into dotted keys (lists compare whole).
        Override it to key facts by a stable identity (a package name, a
        filesystem UUID) and to leave out what moves all the time (free space).
        """
        return _flatten(value)

    @classmethod
    def make_options(cls, raw: Mapping[str, Any] | None) -> Any:
        """Validate ``raw`` against ``Options``: unknown keys and wrong types are errors."""
        raw = dict(raw or {})
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = set(raw) - set(fields)
        if unknown:
            raise InspectorError(
                f"inspector {cls.name!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(fields) or 'none'}"
            )
        for key, value in raw.items():
            want = _field_type(fields[key])
            if want is not None and not _conforms(value, want):
                raise InspectorError(
                    f"inspector {cls.name!r}: option {key!r} must be {want.__name__}, "
                    f"got {type(value).__name__}"
                )
        return cls.Options(**raw)

    @classmethod
    def describe_options(cls) -> list[dict[str, Any]]:
        out = []
        for f in dataclasses.fields(cls.Options):
            if f.default is not dataclasses.MISSING:
                default: Any = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            out.append({"name": f.name, "type": str(f.type), "default": default})
        return out


_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool}


def _field_type(f: dataclasses.Field[Any]) -> type | None:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if t in _SIMPLE:
        return _SIMPLE[t]
    if t.startswith(("list", "tuple")):
        return list
    return None


def _conforms(value: Any, want: type) -> bool:
    if want is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is list:
        return isinstance(value, list | tuple)
    return isinstance(value, want)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True, default=str)}
    return {prefix: value}
