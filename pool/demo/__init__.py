"""Generators, not product logic: the demo fleet (``_fleet``, with the
real-fleet layouts of ``_hard``) and the fidelity corpus (``_corpus``), disk
images built with host tools whose facts are known, and ``_regf`` (a minimal
Windows registry hive writer for them).

May import: ``guestpool._errors``, ``guestpool._paths``, ``inspectors``,
``fleet``, ``appliance``. Used by the CLI (``fleet demo``, ``quickstart``),
the bench and the tests.
"""
