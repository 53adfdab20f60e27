"""What travels over NATS, as typed msgspec messages (JSON on the wire)."""

from __future__ import annotations

from typing import Any

import msgspec

from guestpool.fleet._model import VM
from guestpool.inspectors._specs import InspectorSpec
from guestpool.store._results import InspectResult


class Job(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Inspect one VM of ``host``'s own fleet (with ``batch``: several, attached to
    one appliance together), by name: the coordinator never sends a path, the
    agent reads disks only from its local source."""

    round_id: int
    host: str
    vm: str
    #: wall-clock (epoch) second after which no agent starts or continues this job
    deadline: float
    inspectors: list[InspectorSpec]
    #: random per job, seen only by the coordinator and ``host``: part of the
    #: result's de-duplication id (see ``_subjects.result_id``)
    nonce: str = ""
    #: the round's id across coordinators and stores (``Store.round_uid``)
    round_uid: str = ""
    #: more VMs of the same trust group to attach with ``vm`` (``--batch``)
    batch: list[str] = msgspec.field(default_factory=list)

    @property
    def vms(self) -> list[str]:
        return [self.vm, *self.batch]


class JobResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One VM's result. ``host`` is the sender's claim: the coordinator believes
    the subject the server let the message through on, and refuses a result
    whose claim differs."""

    round_id: int
    host: str
    result: dict[str, Any]
    #: the job's ``round_uid``: a result of another coordinator's (or store's)
    #: round with the same number is not this round's
    round_uid: str = ""

    def inspect_result(self) -> InspectResult:
        return InspectResult(**{k: v for k, v in self.result.items() if k in WIRE_FIELDS})


#: what of an ``InspectResult`` travels to the coordinator: all of it (the disk
#: fingerprint too: the coordinator keeps it to verify the VM unchanged later)
WIRE_FIELDS = frozenset(InspectResult.__dataclass_fields__)


def wire_result(result: InspectResult) -> dict[str, Any]:
    return {k: getattr(result, k) for k in WIRE_FIELDS}


class HostInfo(msgspec.Struct, frozen=True):
    """One agent's heartbeat in the hosts bucket: its inventory and capacity."""

    host: str
    #: epoch second of this heartbeat
    seen: float
    heartbeat: float
    pool_size: int
    strategy: str
    #: measured means, ``boot`` and ``job-<strategy>`` (as the store keeps them)
    costs: dict[str, float]
    vms: list[VM]
    ready: bool = False
    agent: str = ""
    #: the agent's pool since it started: boots, retirements by reason, and the
    #: accelerator its appliances run on ("" before the first boot); a round's
    #: share is the difference between two heartbeats
    boots: int = 0
    retirements: dict[str, int] = msgspec.field(default_factory=dict)
    accel: str = ""
    #: VM -> the digest of its disk files now (``_fingerprint.digest``), for the
    #: VMs this agent inspected: the coordinator verifies them unchanged with it
    disks: dict[str, str] = msgspec.field(default_factory=dict)

    def alive(self, now: float) -> bool:
        """Heard from within three heartbeats (clocks kept by NTP)."""
        return now - self.seen <= 3 * self.heartbeat + 1.0


def encode(message: msgspec.Struct) -> bytes:
    return msgspec.json.encode(message)


def decode_job(data: bytes) -> Job:
    return msgspec.json.decode(data, type=Job)


def decode_result(data: bytes) -> JobResult:
    return msgspec.json.decode(data, type=JobResult)


def decode_host(data: bytes) -> HostInfo:
    return msgspec.json.decode(data, type=HostInfo)
