"""One appliance: a worker process that owns one libguestfs handle, and the
typed protocol the supervisor speaks to it.

Owns: ``_abc`` (the appliance contract: what the pool needs of an appliance,
the seam for fakes), ``_protocol`` (messages and frames, sans-I/O),
``_process`` (the supervisor side of a worker process), ``_worker`` (the
worker process itself), ``_hotplug`` and ``_qmp`` (late binding of disks over
QMP), ``_descriptors`` (a disk's checked files handed to qemu as
descriptors), ``_accel`` (does KVM work here?), ``_sizing`` (how many
appliances this machine holds).

May import: ``guestpool._errors``, ``guestpool._paths``, ``guestpool.inspectors``
and ``guestpool.fleet`` (the worker re-checks an image with the fleet's
safety rules). Never the supervisor side (``rounds`` and above): the worker
process loads this package and must stay small.
"""
