"""AMQP frames: header tables decoded to a bounded depth.

pika decodes a delivery's header table recursively, while reading the frame and
before fmn sees anything. Headers nested some thousands of levels deep (RabbitMQ
passes them on) make that decoder raise ``RecursionError``; pika then drops the
connection, the broker redelivers the message to the next connection, and the
consumer loops on it forever: the failure names no delivery that could be
rejected. ``bound_header_depth`` makes pika's decoder stop at a depth: a table or
array nested deeper is skipped by its length prefix (without being read) and
replaced by :data:`CUT_MARKER`, which is one level deeper than allowed, so the
delivery arrives whole, ``fmn_core.messages.check_headers`` refuses it as
malformed, and it is acked and dropped like any other malformed delivery.

pika has no hook for this, so the guard wraps ``pika.data.decode_value``, which
the table decoder looks up by name for every value. It is installed once per
process; the limit can be changed later (the consumer sets it from
``ingest.max_header_depth``). Operators add a second, broker-side bound for
whatever else might kill a connection: a quorum queue with ``x-delivery-limit``
and a dead-letter exchange (see docs/reliability.md).

The guard also installs a table decoder that reads the common header values in
place, and ``read_frames_lean`` makes the consumer's connection read its frames
with less work per frame; both decode the same bytes into the same values as
pika, and fail where pika fails (``tests/daemon/test_frames.py`` holds them to
pika's own code; docs/performance.md has the figures).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import pika.connection
import pika.data
import pika.exceptions
import pika.frame
import pika.spec

__all__ = ["CUT_MARKER", "bound_header_depth", "header_depth_limit", "read_frames_lean"]

#: What stands for a table or array nested deeper than the limit.
CUT_MARKER: dict[str, Any] = {"x-fmn-cut": "nested too deeply"}

_lock = threading.Lock()
_state = threading.local()
_limit = 16
_original: Callable[[bytes, int], tuple[Any, int]] | None = None
#: pika's own table decoder, which ``_decode_table`` replaces (kept for comparison).
PIKA_DECODE_TABLE: Callable[[bytes, int], tuple[dict[Any, Any], int]] = pika.data.decode_table


def header_depth_limit() -> int | None:
    """The depth the guard cuts at, or ``None`` when it is not installed."""
    return _limit if _original is not None else None


def _bounded_decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
    assert _original is not None
    kind = encoded[offset : offset + 1]
    if kind not in (b"F", b"A"):
        return _original(encoded, offset)
    # ``open`` counts the tables and arrays being decoded around this value; the
    # properties' own header table is decoded directly, so it is not counted.
    open_now: int = getattr(_state, "open", 0)
    if open_now + 2 > _limit:
        (length,) = struct.unpack_from(">I", encoded, offset + 1)
        return dict(CUT_MARKER), offset + 1 + 4 + length
    _state.open = open_now + 1
    try:
        return _original(encoded, offset)
    finally:
        _state.open = open_now


_UNSIGNED_BYTE = struct.Struct("B")
_UNSIGNED_LONG = struct.Struct(">I")
_SIGNED_LONG_LONG = struct.Struct(">q")


def _decode_table(encoded: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """``pika.data.decode_table``, with its keys and common values read in place.

    Bus headers are a table of long strings, a few integers and booleans: pika
    reads each entry through two calls (three with the depth guard) and a chain
    of type tests that reaches long strings near its end. Keys, long strings,
    64-bit integers and booleans are read here exactly as pika reads them (a key
    or string that is not UTF-8 stays bytes); every other value still goes
    through ``pika.data.decode_value``, the depth guard included.
    """
    unpack_byte, unpack_long = _UNSIGNED_BYTE.unpack_from, _UNSIGNED_LONG.unpack_from
    result: dict[Any, Any] = {}
    limit = offset + 4 + unpack_long(encoded, offset)[0]
    offset += 4
    while offset < limit:
        length = unpack_byte(encoded, offset)[0]
        offset += 1
        key: Any = encoded[offset : offset + length]
        # Not ``contextlib.suppress``: a context manager per entry costs more than the read.
        try:  # noqa: SIM105
            key = key.decode("utf8")
        except UnicodeDecodeError:
            pass
        offset += length
        kind = encoded[offset : offset + 1]
        if kind == b"S":
            length = unpack_long(encoded, offset + 1)[0]
            offset += 5
            value: Any = encoded[offset : offset + length]
            try:  # noqa: SIM105
                value = value.decode("utf8")
            except UnicodeDecodeError:
                pass
            offset += length
        elif kind == b"l":  # how pika (and fedora-messaging) send every int
            value = _SIGNED_LONG_LONG.unpack_from(encoded, offset + 1)[0]
            offset += 9
        elif kind == b"t":
            value = bool(unpack_byte(encoded, offset + 1)[0])
            offset += 2
        else:
            value, offset = pika.data.decode_value(encoded, offset)
        result[key] = value
    return result, offset


def bound_header_depth(limit: int) -> None:
    """Make pika cut header tables nested deeper than ``limit`` (the top table is level 1)."""
    global _limit, _original
    with _lock:
        _limit = max(1, limit)
        if _original is None:
            _original = pika.data.decode_value
            pika.data.decode_value = _bounded_decode_value
            pika.data.decode_table = _decode_table


_FRAME_HEADER = struct.Struct(">BHL")
_METHOD_ID = struct.Struct(">I")
_CONTENT_HEADER = struct.Struct(">HHQ")


def read_frames_lean(connection: pika.connection.Connection) -> None:
    """Make ``connection`` read its inbound frames with less work per frame.

    pika decodes one frame at a time from the start of its buffer and copies
    what is left after each one (three frames and three copies per delivery),
    slicing a frame's payload twice on the way. This reads the frames at an
    offset into the buffer, keeps what is left once per read, and hands header
    and body frames (which carry no method, so pika's callback table has
    nothing for them) straight to their channel. Each frame is decoded from
    the same bytes by the same pika code as before (a method frame from its
    own payload, so a method running past its frame fails as it did); a
    protocol header, a heartbeat, any other frame type, and an incomplete
    frame go through pika's own decoder, unchanged. The header table's depth
    bound (``bound_header_depth``) is pika's table decoder's, so it applies here
    as it did.
    """
    end_marker = pika.spec.FRAME_END
    methods, props = pika.spec.methods, pika.spec.props
    header_frame, body_frame, method_frame = pika.frame.Header, pika.frame.Body, pika.frame.Method
    unpack_header, unpack_method = _FRAME_HEADER.unpack_from, _METHOD_ID.unpack_from
    unpack_content = _CONTENT_HEADER.unpack_from
    decode_frame = pika.frame.decode_frame

    def on_data_available(data_in: bytes) -> None:
        buffer = connection._frame_buffer + data_in if connection._frame_buffer else data_in
        connection._frame_buffer = buffer
        offset, size = 0, len(buffer)
        try:
            while offset < size:
                value: Any
                lean = False
                if size - offset >= 7:
                    frame_type, channel, length = unpack_header(buffer, offset)
                    frame_end = offset + 8 + length
                    lean = frame_end <= size and (
                        frame_type == 3 or frame_type == 1 or (frame_type == 2 and length >= 12)
                    )
                if lean:
                    if buffer[frame_end - 1] != end_marker:
                        raise pika.exceptions.InvalidFrameError("Invalid FRAME_END marker")
                    start = offset + 7
                    if frame_type == 3:
                        value = body_frame(channel, buffer[start : frame_end - 1])
                    elif frame_type == 2:
                        class_id, _, body_size = unpack_content(buffer, start)
                        properties = props[class_id]()
                        properties.decode(buffer[start + 12 : frame_end - 1])
                        value = header_frame(channel, body_size, properties)
                    else:
                        payload = buffer[start : frame_end - 1]
                        method = methods[unpack_method(payload)[0]]()
                        method.decode(payload, 4)
                        value = method_frame(channel, method)
                    consumed = frame_end - offset
                else:
                    # Anything else, and a frame not yet whole: pika's own decoder.
                    consumed, value = decode_frame(buffer[offset:])
                    if not value:
                        return
                offset += consumed
                connection.bytes_received += consumed
                kind = type(value)
                if kind is header_frame or kind is body_frame:
                    # What ``_process_frame`` does with a frame that is neither a
                    # method nor a heartbeat: count it, give it to its channel.
                    connection.frames_received += 1
                    if value.channel_number > 0:
                        connection._deliver_frame_to_channel(value)
                else:
                    connection._process_frame(value)
                if connection._frame_buffer is not buffer:
                    return  # the connection was reset while this frame was handled
        finally:
            if offset and connection._frame_buffer is buffer:
                connection._frame_buffer = buffer[offset:]

    connection._on_data_available = on_data_available
