"""Change-aware rounds: a VM whose disk files were not written since its last good
inspection is verified on the host in about a millisecond, without an appliance,
and its results are carried forward with the time they were really inspected.

A VM is carried forward only when all of these hold (else it is inspected):
its last inspection succeeded with every inspector; that inspection ran with the
same inspectors (names, options, installed versions) and the same safety policy
(``context``); it is at most ``max_age`` seconds old; and every file its disks
need is the same file with the same size, times and qcow2 header
(:func:`guestpool.rounds._fingerprint.difference`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guestpool._errors import InspectorError
from guestpool.fleet._model import VM
from guestpool.fleet._safety import SafetyPolicy
from guestpool.inspectors._registry import resolve
from guestpool.inspectors._specs import InspectorSpec
from guestpool.store._database import Store
from guestpool.store._results import InspectResult

from ._fingerprint import difference

DEFAULT_MAX_AGE_S = 24 * 3600.0
#: reasons to inspect a VM other than a change of its disk files ("remote": its
#: files are on another host, which does not send their metadata)
PLAIN_REASONS = ("never", "inspectors", "max-age", "remote")


def context(specs: Sequence[InspectorSpec], policy: SafetyPolicy | None) -> str:
    """What a carried result must have been inspected with: the inspectors (name,
    options, installed version; not deadlines) and the safety policy, as a digest."""
    def version(name: str) -> str | None:
        try:
            return resolve(name).version
        except InspectorError:  # a module:Class that cannot be loaded
            return None

    inspectors = sorted([s.name, s.options, version(s.name)] for s in specs)
    rules = dataclasses.asdict(policy) if policy is not None else None
    text = json.dumps({"inspectors": inspectors, "policy": rules}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Verified:
    """Which VMs of a round were verified unchanged and which must be inspected."""

    #: VM name -> (its fingerprint record: the result carried forward, its store
    #: id and inspection time; the seconds the verification took)
    unchanged: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    #: VMs to inspect, in fleet order
    todo: list[VM] = field(default_factory=list)
    #: why each VM of ``todo`` is inspected: "never" (no good inspection with a
    #: fingerprint), "inspectors" (other inspectors or safety policy), "max-age",
    #: or what changed in its disk files
    reasons: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many VMs are inspected for each kind of reason."""
        return dict(Counter(r if r in PLAIN_REASONS else "changed"
                            for r in self.reasons.values()))

    def changed(self) -> dict[str, str]:
        """The VMs whose disk files changed, with what changed."""
        return {vm: why for vm, why in self.reasons.items() if why not in PLAIN_REASONS}


def verify(vms: Sequence[VM], recorded: Mapping[str, dict[str, Any]], ctx: str,
           max_age: float, now: float | None = None,
           differ: Callable[[VM, Any], str | None] = difference) -> Verified:
    """Split ``vms`` into unchanged and to-inspect against ``recorded``
    (:meth:`Store.fingerprints`). ``differ`` says why a VM's disk files are not
    those recorded (None: they are): by default, read here (file metadata only:
    run it in a thread)."""
    now = time.time() if now is None else now
    out = Verified()
    for vm in vms:
        started = time.perf_counter()
        rec = recorded.get(vm.name)
        if rec is None:
            why: str | None = "never"
        elif rec["context"] != ctx:
            why = "inspectors"
        elif now - rec["inspected_at"] > max_age:
            why = "max-age"
        else:
            why = differ(vm, rec["files"])
        if why is None and rec is not None:
            out.unchanged[vm.name] = (rec, time.perf_counter() - started)
        else:
            out.todo.append(vm)
            out.reasons[vm.name] = why or "never"
    return out


def carried_results(store: Store, verified: Verified, strategy: str
                    ) -> list[tuple[int, InspectResult]]:
    """The results the unchanged VMs carry forward, with their store ids."""
    entries = store.entries(rec["result_id"] for rec, _ in verified.unchanged.values())
    return [(rec["result_id"],
             InspectResult(name, True, entries.get(rec["result_id"], {}), strategy=strategy,
                           timings={"verify": seconds, "total": seconds},
                           inspected_at=rec["inspected_at"]))
            for name, (rec, seconds) in verified.unchanged.items()]
