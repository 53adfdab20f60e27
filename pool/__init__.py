"""guestpool: inspect many VM disks inside a time budget with pre-booted appliances."""

from .errors import (
    ApplianceError,
    ApplianceTimeout,
    FleetError,
    GuestpoolError,
    ImageError,
    InspectorError,
    SetupError,
)
from .fleet import VM, Disk, Fleet, load_manifest
from .pool import InspectResult, Pool, Stats, default_pool_size

__all__ = [
    "VM",
    "ApplianceError",
    "ApplianceTimeout",
    "Disk",
    "Fleet",
    "FleetError",
    "GuestpoolError",
    "ImageError",
    "InspectResult",
    "InspectorError",
    "Pool",
    "SetupError",
    "Stats",
    "default_pool_size",
    "load_manifest",
]
