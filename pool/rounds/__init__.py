"""A budgeted round over a fleet, on a pool of booted appliances.

Owns: ``_pool`` (the supervisor: appliances booted ahead, late-bound to one
VM after another, retired and replaced), ``_dispatch`` (which VMs go to which
appliance, in batches), ``_plan`` (predicted coverage from measured costs),
``_round`` (``run_round``: the one round runner, in phases), ``_report``
(``RoundOptions`` and ``RoundReport``), ``_target`` (where jobs run: the local
pool, or hosts over NATS through ``guestpool.nats``), ``_fingerprint`` and
``_unchanged`` (change detection: VMs whose disks did not change are carried
forward), ``_periodic`` (rounds on an interval), ``_progress`` (what a round
shows while it runs), ``_writer`` (a round's results committed off the event
loop, waiting out a locked store, the rest kept in the store's journal).

May import: ``guestpool._errors``, ``guestpool._paths``, ``inspectors``,
``fleet``, ``appliance``, ``store``, ``supply``. Never ``service``, ``nats``
or ``cli``: they drive rounds, rounds do not know them.
"""
