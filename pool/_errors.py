"""Typed errors. Each message says what went wrong and what the user can do."""

from __future__ import annotations


class GuestpoolError(Exception):
    """Base class of every error guestpool raises on purpose."""


class SetupError(GuestpoolError):
    """The host lacks something guestpool needs (libguestfs, qemu, memory)."""


class ApplianceError(GuestpoolError):
    """An appliance failed or hung; the job may succeed on another appliance."""


class ApplianceTimeout(ApplianceError):
    """An appliance operation missed its deadline; the appliance was killed."""


class ImageError(GuestpoolError):
    """The VM's image cannot be read (missing, corrupt, refused); retrying won't help."""


class InspectorError(GuestpoolError):
    """An inspector is unknown, broken, or got invalid options."""


class FleetError(GuestpoolError):
    """A fleet manifest or source is unreadable or inconsistent."""


class LateBindingUnavailable(ApplianceError):
    """Appliances here cannot hot-plug disks (no QMP monitor); use the cold strategy."""


class HostileGuest(GuestpoolError):
    """The guest changed the appliance that inspected it: the appliance is retired
    and the VM is not retried on another one."""
