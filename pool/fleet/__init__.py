"""Which VMs exist, where their disks are, and whether an image may be opened.

Owns: ``_model`` (``VM``, ``Disk``, ``Fleet``, manifests), ``_schema`` (the one
strict schema of a VM entry), ``_sources`` (the
``Source`` protocol and ``open_source``) with one module per kind of source
(``_manifest``, ``_folder``, ``_nova``, ``_libvirt``), and ``_safety`` (the
host-side checks of every image chain before qemu sees it).

May import: ``guestpool._errors``, ``guestpool._paths``, ``guestpool.inspectors``
(the key type a VM carries). Nothing that runs an appliance.
"""
