"""Generators, not product logic: real disk images whose facts are known, for
the demo fleet, the fidelity corpus, the bench and the tests.

Owns: ``_fleet`` (the demo fleet: ``generate``), ``_kinds`` (which VM is which
kind), ``_hard`` (hard kinds: overlays on corpus templates), ``_corpus`` (the
fidelity corpus: ``build_corpus``), ``_layouts`` (one builder per hard layout,
with the facts it must yield), ``_images`` (disk images from host trees, and
the appliance steps for what needs a kernel), ``_packages`` (package
databases as package managers write them), ``_windows_guest`` and ``_regf``
(a Windows guest's registry hives and executables).

May import: ``guestpool._errors``, ``guestpool._paths``, ``inspectors``,
``fleet``, ``appliance``. Used by the CLI (``fleet demo``, ``quickstart``),
the bench and the tests.
"""
