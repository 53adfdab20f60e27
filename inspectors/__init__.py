"""The inspector API: write an :class:`Inspector`, read the guest through :class:`Guest`.

Layout: ``_api`` (the base class and option checks), ``_guest`` (the bounded,
read-only view of one VM inside the appliance), ``_devices`` (finding the VM's
filesystems), ``_builtin`` and ``_inventory`` (the built-in inspectors),
``_registry`` (finding, resolving and running inspectors).
"""

from guestpool.inspectors._specs import InspectorSpec

from ._api import Inspector
from ._files import DeadlineExceeded, GuestReadError
from ._guest import Guest, Root
from ._layout import Filesystem
from ._registry import DEFAULT_INSPECTORS, available, resolve, resolve_specs

__all__ = [
    "DEFAULT_INSPECTORS",
    "DeadlineExceeded",
    "Filesystem",
    "Guest",
    "GuestReadError",
    "Inspector",
    "InspectorSpec",
    "Root",
    "available",
    "resolve",
    "resolve_specs",
]
