"""Length-prefixed msgpack frames between supervisor and appliance workers.

A frame is a 4-byte big-endian length followed by one msgpack object. Requests
are ``{"id", "op", "args"}``; replies ``{"id", "ok": True, "result"}`` or
``{"id", "ok": False, "error": {"kind", "message"}}``.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import msgpack

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer sent something that is not a frame, or went away mid-frame."""


def encode(obj: Any) -> bytes:
    """One frame holding ``obj``; raises TypeError for data msgpack cannot carry."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def frame_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"peer announced a {length}-byte frame, over the limit")
    return int(length)


HEADER_SIZE = _HEADER.size


def read_frame(stream: BinaryIO) -> Any | None:
    """Blocking read of one frame; None on a clean end of stream."""
    header = stream.read(HEADER_SIZE)
    if not header:
        return None
    if len(header) < HEADER_SIZE:
        raise FrameError("stream ended inside a frame header")
    length = frame_length(header)
    body = stream.read(length)
    if len(body) < length:
        raise FrameError("stream ended inside a frame body")
    return decode_body(body)


def write_frame(stream: BinaryIO, obj: Any) -> None:
    stream.write(encode(obj))
    stream.flush()
