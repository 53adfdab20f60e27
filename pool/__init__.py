"""guestpool: inspect many VM disks inside a time budget with pre-booted appliances.

The public API is the names of ``__init__.pyi``, listed there once; every
other module is private. Names load on first use, so a worker process (which
imports ``guestpool.appliance._worker``) and a plugin author's
``import guestpool.inspectors`` load none of the supervisor. The subpackages,
in the order a job passes through them, are described in ``pool/README.md``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
