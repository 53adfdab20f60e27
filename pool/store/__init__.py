"""What guestpool remembers: results, history, drift and the views built on them.

Owns: ``_results`` (one VM's result and a round's stats), ``_database`` (the
SQLite store), ``_drift`` (what changed between two results),
``_fleetview`` (the operator's read model: one row per VM), ``_export``
(JSON Lines and CSV out of the store).

May import: ``guestpool._errors``, ``guestpool._paths``, ``guestpool.inspectors``,
``guestpool.fleet``. Never ``rounds``, ``service``, ``nats`` or ``cli``.
"""
