"""The inspector API: write an :class:`Inspector`, read the guest through :class:`Guest`.

Layout: ``_api`` (the base class and option checks), ``_guest`` (the bounded,
read-only view of one VM inside the appliance), ``_devices`` (finding the VM's
filesystems), ``_builtin`` and ``_inventory`` (the built-in inspectors),
``_registry`` (finding, resolving and running inspectors).
"""

from guestpool._protocol import InspectorSpec as InspectorSpec

from ._api import Inspector as Inspector
from ._devices import Filesystem as Filesystem
from ._guest import DeadlineExceeded as DeadlineExceeded
from ._guest import Guest as Guest
from ._guest import GuestReadError as GuestReadError
from ._guest import Root as Root
from ._registry import DEFAULT_INSPECTORS as DEFAULT_INSPECTORS
from ._registry import available as available
from ._registry import resolve as resolve
from ._registry import resolve_specs as resolve_specs

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
