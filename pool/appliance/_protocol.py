"""The supervisor–worker protocol: typed messages in length-prefixed msgpack frames.

Sans-I/O, in h11's style: this module turns messages into bytes and bytes into
messages and does no I/O itself, so the asynchronous supervisor, the blocking
worker and the simulator share one definition. A frame is a 4-byte big-endian
length followed by one msgpack object: a :class:`RequestFrame` from the
supervisor, a :class:`ReplyFrame` back. Every request has an id; every reply
carries it and is either the reply type the request expects or a
:class:`Failure` with an :class:`ErrorKind`.

It imports nothing of the supervisor: the worker process loads it, and the
worker must stay small.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

import msgspec

from guestpool.inspectors._specs import InspectorSpec, LuksKey

MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer sent something that is not a valid frame, or went away mid-frame."""


class FrameTooLarge(FrameError):
    """A message would not fit in one frame (:data:`MAX_FRAME`)."""


class ErrorKind(enum.Enum):
    """Whom a failed operation blames; the pool's retry rules follow from it."""

    #: The VM's image cannot be read (missing, corrupt, refused): another
    #: appliance would fail the same way, so the job is not retried.
    IMAGE = "image"
    #: The appliance failed or is in an unknown state: it is retired and the job
    #: may be retried once on another appliance.
    APPLIANCE = "appliance"
    #: The appliance cannot hot-plug disks here (no QMP monitor): the pool falls
    #: back to the cold strategy, one boot per VM.
    UNSUPPORTED = "unsupported"
    #: The supervisor sent a request the worker cannot act on: a bug, not the VM's fault.
    BAD_REQUEST = "bad_request"
    #: The guest changed the appliance itself (its mount table outside /sysroot):
    #: the appliance is retired, and the job is not retried elsewhere.
    HOSTILE = "hostile"


# -- values carried by messages ----------------------------------------------------


class Layer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file of a disk as the supervisor's checks found it: the worker opens it,
    verifies it is that very file (device and inode), and hands qemu the open
    descriptor, so qemu opens no path of its own choosing."""

    path: str
    #: "raw" or "qcow2" ("raw" for a data file)
    format: str
    #: "disk", "backing" (the next layer down) or "data" (the layer's data file)
    role: str
    dev: int
    ino: int


class DiskRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A disk to attach: its checked path and its declared format (never probed)."""

    path: str
    format: str
    #: the VM is running: read without taking qemu's lock (the result may be inconsistent)
    live: bool = False
    #: every file the checks opened, in their order (the disk, its data file, the
    #: backing file, its data file, ...); empty with the checks off: qemu then
    #: opens the path and follows the image's header itself
    chain: list[Layer] = []


# -- requests ------------------------------------------------------------------------


class Boot(msgspec.Struct, frozen=True, tag="boot"):
    """Boot the worker's appliance with a scratch disk and a QMP monitor."""

    accel: str = "tcg"
    memsize: int | None = None
    smp: int | None = None
    verbose: bool = False


class Attach(msgspec.Struct, frozen=True, tag="attach"):
    """Hot-plug these disks read-only; the reply names them by label, in order."""

    disks: list[DiskRef]


class Inspect(msgspec.Struct, frozen=True, tag="inspect"):
    """Run inspectors on one VM whose disks are attached under ``labels`` (VM order)."""

    vm: str
    labels: list[str]
    inspectors: list[InspectorSpec]
    keys: list[LuksKey] = msgspec.field(default_factory=list)


class Detach(msgspec.Struct, frozen=True, tag="detach"):
    """Release every mount and unplug these disks."""

    labels: list[str]


class Ping(msgspec.Struct, frozen=True, tag="ping"):
    """Health and memory of the appliance."""


class Cold(msgspec.Struct, frozen=True, tag="cold"):
    """Boot an appliance with the VM's disks, inspect, shut down (virt-inspector's way)."""

    vm: str
    disks: list[DiskRef]
    inspectors: list[InspectorSpec]
    accel: str = "tcg"
    memsize: int | None = None
    smp: int | None = None
    keys: list[LuksKey] = msgspec.field(default_factory=list)


class Shutdown(msgspec.Struct, frozen=True, tag="shutdown"):
    """Shut the appliance down; the worker exits after replying."""


Request = Boot | Attach | Inspect | Detach | Ping | Cold | Shutdown


# -- replies ---------------------------------------------------------------------------


class Booted(msgspec.Struct, frozen=True, tag="booted"):
    qemu_pid: int
    seconds: float


class Attached(msgspec.Struct, frozen=True, tag="attached"):
    #: one label per requested disk, in the request's order
    labels: list[str]


class Inspected(msgspec.Struct, frozen=True, tag="inspected"):
    #: inspector name -> {"inspector", "version", "ok", "value" | "error", "seconds"}
    results: dict[str, Any]
    #: seconds the VM's job spent finding its filesystems (discover), its OS roots
    #: (probe), mounting (mount) and closing what was opened (release)
    steps: dict[str, float] = msgspec.field(default_factory=dict)


class Detached(msgspec.Struct, frozen=True, tag="detached"):
    #: disks still attached to the appliance (0 after a clean job)
    attached: int


class Pong(msgspec.Struct, frozen=True, tag="pong"):
    qemu_pid: int
    rss_kb: int
    alive: bool
    attached: int


class ColdDone(msgspec.Struct, frozen=True, tag="cold_done"):
    results: dict[str, Any]
    boot_seconds: float
    inspect_seconds: float
    qemu_pid: int


class Closed(msgspec.Struct, frozen=True, tag="closed"):
    """The appliance is shut down."""


class Failure(msgspec.Struct, frozen=True, tag="failure"):
    kind: ErrorKind
    message: str


Reply = Booted | Attached | Inspected | Detached | Pong | ColdDone | Closed | Failure


class RequestFrame(msgspec.Struct, frozen=True):
    id: int
    request: Request


class ReplyFrame(msgspec.Struct, frozen=True):
    id: int
    reply: Reply
    #: seconds the worker spent on the request
    seconds: float = 0.0


# -- bytes ---------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(RequestFrame)
_reply_decoder = msgspec.msgpack.Decoder(ReplyFrame)


def frame(message: RequestFrame | ReplyFrame) -> bytes:
    """One frame holding ``message``; raises :class:`FrameTooLarge` past :data:`MAX_FRAME`."""
    body = _encoder.encode(message)
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"a {len(body)}-byte message exceeds the {MAX_FRAME}-byte "
                            "frame limit")
    return HEADER.pack(len(body)) + body


def decode_request(body: bytes) -> RequestFrame:
    try:
        return _request_decoder.decode(body)
    except msgspec.DecodeError as e:
        raise FrameError(f"not a valid request: {e}") from None


def decode_reply(body: bytes) -> ReplyFrame:
    try:
        return _reply_decoder.decode(body)
    except msgspec.DecodeError as e:
        raise FrameError(f"not a valid reply: {e}") from None


class FrameDecoder:
    """Splits a byte stream into frame bodies. Feed it what arrives, take frames out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None until more bytes arrive."""
        if len(self._buf) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buf)
        if length > self._max:
            raise FrameTooLarge(f"peer announced a {length}-byte frame, over the "
                                f"{self._max}-byte limit")
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[HEADER.size:end])
        del self._buf[:end]
        return body

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (non-zero at EOF: a torn frame)."""
        return len(self._buf)
