"""guestpool: inspect many VM disks inside a time budget with pre-booted appliances.

The public API is what this module exports; every other module is private.
Layout, in the order a job passes through it:

- ``_sources`` (+ ``_fleet``): which VMs exist and where their disks are;
- ``_safety``: host-side checks of every image before qemu sees it;
- ``_round`` (+ ``_plan``, ``_periodic``): a budgeted round over a fleet,
  ordered by staleness; rounds on an interval;
- ``_pool``: the supervisor, appliances booted ahead and late-bound to VMs;
- ``_abc`` (the appliance contract), ``_appliance`` (a worker process),
  ``_protocol`` (typed messages and frames, shared by both ends);
- ``_worker`` (+ ``_hotplug``, ``_qmp``): inside the worker process, one
  libguestfs handle, disks hot-plugged over QMP;
- ``guestpool.inspectors``: the inspectors and the guest view they read;
- ``_store`` (+ ``_drift``, ``_export``): results, history and drift;
- ``_cli``, ``_service``, ``_progress``: the command line and the HTTP service.

Names are loaded on first use, so the worker process, which imports
``guestpool._worker``, loads none of the supervisor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._abc import Appliance as Appliance
    from ._abc import Spawn as Spawn
    from ._appliance import WorkerAppliance as WorkerAppliance
    from ._errors import ApplianceError as ApplianceError
    from ._errors import ApplianceTimeout as ApplianceTimeout
    from ._errors import FleetError as FleetError
    from ._errors import GuestpoolError as GuestpoolError
    from ._errors import ImageError as ImageError
    from ._errors import InspectorError as InspectorError
    from ._errors import LateBindingUnavailable as LateBindingUnavailable
    from ._errors import SetupError as SetupError
    from ._fleet import VM as VM
    from ._fleet import Disk as Disk
    from ._fleet import Fleet as Fleet
    from ._fleet import load_manifest as load_manifest
    from ._fleet import write_manifest as write_manifest
    from ._host import default_pool_size as default_pool_size
    from ._periodic import run_periodic as run_periodic
    from ._plan import Plan as Plan
    from ._plan import plan_round as plan_round
    from ._pool import Pool as Pool
    from ._protocol import ErrorKind as ErrorKind
    from ._protocol import InspectorSpec as InspectorSpec
    from ._results import InspectResult as InspectResult
    from ._results import Stats as Stats
    from ._round import RoundOptions as RoundOptions
    from ._round import RoundReport as RoundReport
    from ._round import run_round as run_round
    from ._safety import SafetyPolicy as SafetyPolicy
    from ._sources import Source as Source
    from ._sources import open_source as open_source
    from ._sources import safety_policy as safety_policy
    from ._store import Store as Store

_WHERE = {
    "Appliance": "_abc", "Spawn": "_abc", "WorkerAppliance": "_appliance",
    "ApplianceError": "_errors", "ApplianceTimeout": "_errors", "FleetError": "_errors",
    "GuestpoolError": "_errors", "ImageError": "_errors", "InspectorError": "_errors",
    "LateBindingUnavailable": "_errors", "SetupError": "_errors",
    "VM": "_fleet", "Disk": "_fleet", "Fleet": "_fleet", "load_manifest": "_fleet",
    "write_manifest": "_fleet", "default_pool_size": "_host", "run_periodic": "_periodic",
    "Plan": "_plan", "plan_round": "_plan", "Pool": "_pool", "ErrorKind": "_protocol",
    "InspectorSpec": "_protocol", "InspectResult": "_results", "Stats": "_results",
    "RoundOptions": "_round", "RoundReport": "_round", "run_round": "_round",
    "SafetyPolicy": "_safety", "Source": "_sources", "open_source": "_sources",
    "safety_policy": "_sources", "Store": "_store",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'guestpool' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
