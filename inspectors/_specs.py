"""What a caller hands an inspector run: which inspector with which options
(:class:`InspectorSpec`), and LUKS keys (:class:`LuksKey`). They travel to the
worker inside the appliance protocol's messages, which is why they are msgspec
structs, but they belong to the inspector API: a plugin author sees them, and
the protocol imports them from here, never the other way round."""

from __future__ import annotations

from typing import Any

import msgspec

_ENCODER = msgspec.msgpack.Encoder()


class InspectorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One inspector to run, resolved and validated where the user chose it (CLI,
    HTTP, library call): a registered name or a ``module:Class`` path, its
    options and the seconds it may take on one VM (None: the inspector's own)."""

    name: str
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    deadline: float | None = None


class LuksKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A LUKS passphrase for one of the VM's devices (its own name) or, without a
    device, for any. Travels to the worker only; never in a reply or a log."""

    secret: str
    device: str | None = None

    def __repr__(self) -> str:
        return f"LuksKey(device={self.device!r}, secret=<hidden>)"


def encoded_size(value: Any) -> int:
    """Bytes ``value`` takes on the wire; raises TypeError for data msgpack cannot carry."""
    try:
        return len(_ENCODER.encode(value))
    except (msgspec.EncodeError, OverflowError) as e:
        raise TypeError(str(e)) from e
