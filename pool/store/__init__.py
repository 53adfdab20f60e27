"""What guestpool remembers: results, history, drift and the views built on them.

Owns: ``_results`` (one VM's result and a round's stats), ``_database`` (the
SQLite store), ``_drift`` (what changed between two results),
``_fleetview`` (the operator's read model: one row per VM), ``_export``
(JSON Lines and CSV out of the store), ``_transactions`` (write transactions
and ``StoreError``), ``_journal`` (results a locked or full store did not
take, replayed at the next start), ``_owner`` (which process runs an open
round).

May import: ``guestpool._errors``, ``guestpool._paths``, ``guestpool.inspectors``,
``guestpool.fleet``. Never ``rounds``, ``service``, ``nats`` or ``cli``.
"""
