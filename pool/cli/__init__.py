"""The ``guestpool`` command line.

Owns: ``_main`` (the click group, ``scan``/``monitor``/``serve`` and the read
commands), ``_fleet`` (``vms``/``report``/``show`` output), ``_supply``
(``vulns`` and SBOM export), ``_nats`` (``agent``, ``coordinator``,
``nats-config``), ``_doctor``, and ``_output`` (where it writes, exit codes,
how a round reads on a terminal).

May import everything: it is the top layer. Nothing imports it but
``guestpool.__main__`` and the ``guestpool`` script.
"""
