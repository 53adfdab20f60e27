"""The public API, pinned (in the style of trio's test_exports.py and httpx's
test_exported_members.py): a name added, removed or renamed fails here first,
so it is a decision, not an accident."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import guestpool
import guestpool.inspectors

REPO = Path(__file__).resolve().parent.parent

GUESTPOOL = [
    "Appliance", "ApplianceError", "ApplianceTimeout", "Disk", "ErrorKind", "Fleet",
    "FleetError", "GuestpoolError", "ImageError", "InspectResult", "InspectorError",
    "InspectorSpec", "LateBindingUnavailable", "Plan", "Pool", "RoundOptions", "RoundReport",
    "SafetyPolicy", "SetupError", "Source", "Spawn", "Stats", "Store", "VM", "WorkerAppliance",
    "default_pool_size", "load_manifest", "open_source", "plan_round", "run_periodic",
    "run_round", "safety_policy", "write_manifest",
]
INSPECTORS = [
    "DEFAULT_INSPECTORS", "DeadlineExceeded", "Filesystem", "Guest", "GuestReadError",
    "Inspector", "InspectorSpec", "Root", "available", "resolve", "resolve_specs",
]


@pytest.mark.parametrize(("module", "pinned"), [(guestpool, GUESTPOOL),
                                                (guestpool.inspectors, INSPECTORS)])
def test_exports_are_pinned(module: object, pinned: list[str]) -> None:
    assert sorted(module.__all__) == sorted(pinned)  # type: ignore[attr-defined]
    assert [n for n in dir(module) if not n.startswith("_")] == sorted(pinned) or \
        set(pinned) <= set(dir(module))
    for name in pinned:
        assert getattr(module, name) is not None


def test_the_stub_is_the_one_list_and_type_checkers_see_it() -> None:
    """``pool/__init__.pyi`` lists the API once: what mypy reads is what loads."""
    stub = ast.parse((REPO / "pool" / "__init__.pyi").read_text())
    names = [a.asname or a.name for node in stub.body if isinstance(node, ast.ImportFrom)
             for a in node.names]
    assert sorted(names) == sorted(GUESTPOOL)
    assert len(names) == len(set(names))
    assert all(a.asname == a.name for node in stub.body if isinstance(node, ast.ImportFrom)
               for a in node.names), "re-exports need `X as X` for mypy"


def test_every_export_is_documented() -> None:
    undocumented = [n for n in GUESTPOOL + INSPECTORS
                    if (inspect.isclass(obj := getattr(guestpool.inspectors, n, None)
                                        or getattr(guestpool, n)) or inspect.isfunction(obj))
                    and not obj.__doc__]
    assert undocumented == []


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        guestpool.NoSuchThing  # type: ignore[attr-defined] # noqa: B018


def test_the_worker_and_the_plugin_api_load_no_supervisor() -> None:
    """Names load on first use: importing the worker or the inspector API pulls in
    none of rounds, store, service, nats or cli."""
    probe = ("import sys, guestpool.appliance._worker, guestpool.inspectors; "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('guestpool.'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.split()
    heavy = [m for m in loaded if m.split(".")[1] in
             ("rounds", "store", "supply", "service", "nats", "cli", "demo", "bench")]
    assert heavy == []


@pytest.mark.parametrize("package", ["appliance", "fleet", "store", "supply", "rounds", "nats",
                                     "service", "demo", "cli"])
def test_each_subpackage_says_what_it_owns_and_may_import(package: str) -> None:
    doc = importlib.import_module(f"guestpool.{package}").__doc__ or ""
    assert "May import" in doc
    owned = {p.stem for p in (REPO / "pool" / package).glob("_*.py") if p.stem != "__init__"}
    missing = sorted(m for m in owned if f"``{m}``" not in doc)
    assert missing == [], f"guestpool.{package}'s docstring does not name {missing}"
