"""The supervisor-worker protocol: frames and typed messages, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestpool.appliance import _protocol as msg

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _frames(data: bytes, chunk: int) -> list[bytes]:
    decoder, out = msg.FrameDecoder(), []
    for i in range(0, len(data), chunk):
        decoder.feed(data[i:i + chunk])
        while (body := decoder.next_frame()) is not None:
            out.append(body)
    assert decoder.buffered == 0
    return out


@given(msgpack_values, st.integers(1, 64))
def test_replies_roundtrip_in_any_chunking(value: object, chunk: int) -> None:
    message = msg.ReplyFrame(7, msg.Inspected({"x": {"value": value}}), 0.5)
    bodies = _frames(msg.frame(message) * 2, chunk)
    assert [msg.decode_reply(b) for b in bodies] == [message, message]


def test_requests_roundtrip_with_their_types() -> None:
    requests = [msg.Boot("tcg", 1024, None),
                msg.Attach([msg.DiskRef("/x.qcow2", "qcow2", live=True)]),
                msg.Inspect("vm", ["d0"], [msg.InspectorSpec("os", {"full": True}, 60.0)])]
    for i, req in enumerate(requests):
        got = msg.decode_request(msg.frame(msg.RequestFrame(i, req))[4:])
        assert got == msg.RequestFrame(i, req)
        assert type(got.request) is type(req)


def test_failure_carries_its_kind() -> None:
    failure = msg.Failure(msg.ErrorKind.IMAGE, "gone")
    reply = msg.decode_reply(msg.frame(msg.ReplyFrame(1, failure))[4:]).reply
    assert isinstance(reply, msg.Failure) and reply.kind is msg.ErrorKind.IMAGE


def test_malformed_messages_are_frame_errors() -> None:
    with pytest.raises(msg.FrameError):
        msg.decode_request(b"\x81\xa2id\x01")  # a map without a request
    with pytest.raises(msg.FrameError):
        msg.decode_reply(msg.frame(msg.RequestFrame(1, msg.Boot()))[4:])  # a request is not a reply
    with pytest.raises(msg.FrameError):
        msg.decode_request(b"\xc1")  # not msgpack at all


def test_torn_and_oversized_frames() -> None:
    data = msg.frame(msg.RequestFrame(1, msg.Boot()))
    decoder = msg.FrameDecoder()
    decoder.feed(data[:-1])
    assert decoder.next_frame() is None and decoder.buffered == len(data) - 1
    decoder = msg.FrameDecoder()
    decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(msg.FrameTooLarge):
        decoder.next_frame()


def test_a_message_over_the_limit_is_refused_before_sending() -> None:
    huge = msg.Inspected({"x": "a" * (msg.MAX_FRAME + 1)})
    with pytest.raises(msg.FrameTooLarge):
        msg.frame(msg.ReplyFrame(1, huge))
