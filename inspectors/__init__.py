"""The inspector API: write an :class:`Inspector`, read the guest through :class:`Guest`.

This package is the plugin author's layer: it imports nothing of the
supervisor (``tests/test_layout.py`` holds it to that), so a plugin sees only
what is exported here. Its private modules, in the order a job uses them:
``_specs`` (what a caller hands a run: inspector specs, LUKS keys),
``_shell`` (reading the appliance shell's answers), ``_layout``,
``_probe_output`` and ``_devices`` (finding the VM's filesystems),
``_files`` (bounded reads under a deadline), ``_mount_scripts`` and ``_guest``
(roots and mounts: the :class:`Guest` view), ``_hive`` and ``_windows``
(registry facts), ``_osfacts`` (Linux facts as libguestfs derives them),
``_api`` (the base class and option checks), ``_builtin`` and ``_inventory``
(the built-in inspectors, with the package database readers ``_rpmdb``,
``_ndb``, ``_bdb`` and the ``_sandbox`` they run in), ``_registry`` (finding,
resolving and running inspectors). Guide: ``inspectors/README.md``.
"""

from ._api import Inspector as Inspector
from ._files import DeadlineExceeded as DeadlineExceeded
from ._files import GuestReadError as GuestReadError
from ._guest import Guest as Guest
from ._guest import Root as Root
from ._layout import Filesystem as Filesystem
from ._registry import DEFAULT_INSPECTORS as DEFAULT_INSPECTORS
from ._registry import available as available
from ._registry import resolve as resolve
from ._registry import resolve_specs as resolve_specs
from ._specs import InspectorSpec as InspectorSpec

__all__ = sorted(name for name in dir() if not name.startswith("_"))
