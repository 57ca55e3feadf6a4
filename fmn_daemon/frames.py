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
with less work per frame, a whole delivery at once when its three frames are in
the buffer (its method and properties read in place by ``decode_deliver`` and
``decode_properties``); all of them decode the same bytes into the same values
as pika, and fail where pika fails (``tests/daemon/test_frames.py`` holds them
to pika's own code; docs/performance.md has the figures).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import pika.callback
import pika.channel
import pika.connection
import pika.data
import pika.exceptions
import pika.frame
import pika.spec

from fmn_core.messages import bare_properties

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


_UNSIGNED_LONG = struct.Struct(">I")
_SIGNED_LONG = struct.Struct(">i")
_SIGNED_LONG_LONG = struct.Struct(">q")


def _decode_table(encoded: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """``pika.data.decode_table``, with its keys and common values read in place.

    Bus headers are a table of long strings, a few integers and booleans: pika
    reads each entry through two calls (three with the depth guard) and a chain
    of type tests that reaches long strings near its end. Keys, long strings,
    32- and 64-bit integers and booleans are read here exactly as pika reads
    them (a key or string that is not UTF-8 stays bytes); every other value
    still goes through ``pika.data.decode_value``, the depth guard included.
    """
    unpack_long = _UNSIGNED_LONG.unpack_from
    result: dict[Any, Any] = {}
    start = offset
    limit = offset + 4 + unpack_long(encoded, offset)[0]
    offset += 4
    try:
        while offset < limit:
            at = offset + 1
            offset = at + encoded[offset]
            key: Any = encoded[at:offset]
            # Not ``contextlib.suppress``: a context manager per entry costs more than the read.
            try:  # noqa: SIM105
                key = key.decode("utf8")
            except UnicodeDecodeError:
                pass
            kind = encoded[offset]
            if kind == 83:  # b"S"
                at = offset + 5
                offset = at + unpack_long(encoded, offset + 1)[0]
                value: Any = encoded[at:offset]
                try:  # noqa: SIM105
                    value = value.decode("utf8")
                except UnicodeDecodeError:
                    pass
            elif kind == 73:  # b"I": how pika sends an int of up to 32 bits (the severity)
                value = _SIGNED_LONG.unpack_from(encoded, offset + 1)[0]
                offset += 5
            elif kind == 108:  # b"l": how pika sends a larger int
                value = _SIGNED_LONG_LONG.unpack_from(encoded, offset + 1)[0]
                offset += 9
            elif kind == 116:  # b"t"
                value = encoded[offset + 1] != 0
                offset += 2
            else:
                value, offset = pika.data.decode_value(encoded, offset)
            result[key] = value
    except IndexError:
        # A byte read past the end of the data, which pika reads with ``struct``
        # or a slice: pika's own decoder, reading the same bytes, fails its way.
        return PIKA_DECODE_TABLE(encoded, start)
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
_UNSIGNED_LONG_LONG = struct.Struct(">Q")

#: The properties ``decode_properties`` reads itself (fedora-messaging sends no others):
#: content type, content encoding, headers, delivery mode, priority, message id, timestamp.
_LEAN_FLAGS = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0800 | 0x0080 | 0x0040
_BASIC_PROPERTIES = pika.spec.BasicProperties


def _short_string(encoded: bytes, offset: int) -> tuple[str | bytes, int]:
    """The AMQP short string at ``offset`` and the offset after it, read as pika reads
    one: UTF-8 text, or its bytes when it is not. Raises ``IndexError`` at the end of
    ``encoded``; the callers' bound (``end``) is theirs to check."""
    start = offset + 1
    offset = start + encoded[offset]
    value = encoded[start:offset]
    try:
        return value.decode("utf8"), offset
    except UnicodeDecodeError:
        return value, offset


def decode_properties(encoded: bytes, offset: int, end: int) -> pika.spec.BasicProperties | None:
    """``BasicProperties().decode(encoded[offset:end])``, read in place; ``None`` if unsure.

    pika builds the properties with their fourteen defaults, then tests each
    flag and decodes each value through a function and a ``struct`` call. This
    reads the same bytes in the same order with the same decoders (the headers'
    is ``pika.data.decode_table``, so the depth bound applies) and gives the
    object the same attributes in the same order. Read in place, a value
    running past ``end`` would take the next frame's bytes instead of failing;
    but every read ends before the offset that follows it and offsets only
    grow, so a result that ends at or before ``end`` is exactly what the slice
    gives. Anything else (a read past ``end``, any exception, a property
    fedora-messaging does not send, a second flag word) answers ``None``, and
    the caller decodes the slice with pika's own code, which then succeeds or
    fails exactly as it always did.
    """
    try:
        flags = encoded[offset] << 8 | encoded[offset + 1]
        if flags & ~_LEAN_FLAGS:
            return None
        offset += 2
        content_type: str | bytes | None = None
        content_encoding: str | bytes | None = None
        message_id: str | bytes | None = None
        headers = delivery_mode = priority = timestamp = None
        if flags & 0x8000:
            content_type, offset = _short_string(encoded, offset)
        if flags & 0x4000:
            content_encoding, offset = _short_string(encoded, offset)
        if flags & 0x2000:
            headers, offset = pika.data.decode_table(encoded, offset)
        if flags & 0x1000:
            delivery_mode = encoded[offset]
            offset += 1
        if flags & 0x0800:
            priority = encoded[offset]
            offset += 1
        if flags & 0x0080:
            message_id, offset = _short_string(encoded, offset)
        if flags & 0x0040:
            timestamp = _UNSIGNED_LONG_LONG.unpack_from(encoded, offset)[0]
            offset += 8
    except Exception:  # pika's own decoder says what is wrong
        return None
    if offset > end:
        return None
    return bare_properties(
        {
            "content_type": content_type,
            "content_encoding": content_encoding,
            "headers": headers,
            "delivery_mode": delivery_mode,
            "priority": priority,
            "message_id": message_id,
            "timestamp": timestamp,
        }
    )


_DELIVER = pika.spec.Basic.Deliver


def decode_deliver(encoded: bytes, offset: int, end: int) -> pika.spec.Basic.Deliver | None:
    """``Basic.Deliver().decode(encoded[:end], offset)``, read in place; ``None`` if unsure.

    The same reads in the same order as pika's decoder, under the same rule as
    ``decode_properties``: a result read entirely before ``end``, or nothing.
    """
    consumer_tag: str | bytes
    exchange: str | bytes
    routing_key: str | bytes
    try:
        consumer_tag, offset = _short_string(encoded, offset)
        delivery_tag = _UNSIGNED_LONG_LONG.unpack_from(encoded, offset)[0]
        redelivered = (encoded[offset + 8] & 1) != 0
        offset += 9
        exchange, offset = _short_string(encoded, offset)
        routing_key, offset = _short_string(encoded, offset)
    except Exception:  # pika's own decoder says what is wrong
        return None
    if offset > end:
        return None
    method: pika.spec.Basic.Deliver = _DELIVER.__new__(_DELIVER)
    method.__dict__ = {
        "consumer_tag": consumer_tag,
        "delivery_tag": delivery_tag,
        "redelivered": redelivered,
        "exchange": exchange,
        "routing_key": routing_key,
    }
    return method


def _content_in(
    buffer: bytes, offset: int, size: int, channel: int
) -> tuple[pika.frame.Header, bytes, int, int] | None:
    """A delivery's whole content at ``offset``: its header frame, its body, where it
    ends and how many frames it took (1 or 2); or ``None``.

    Whole means a content header and its one body frame (none for an empty
    body), both complete in ``buffer``, on ``channel``, with good end markers,
    the body exactly as long as the header says, and the properties read in
    place without doubt (``decode_properties``). Anything else is left to the
    frame-by-frame path, which then does and fails exactly what pika does.
    """
    unpack_header = _FRAME_HEADER.unpack_from
    if size - offset < 7 + 12 + 1:
        return None
    kind, header_channel, header_length = unpack_header(buffer, offset)
    header_end = offset + 8 + header_length
    if (
        kind != 2
        or header_channel != channel
        or header_length < 12
        or header_end > size
        or buffer[header_end - 1] != _FRAME_END
    ):
        return None
    class_id, _, body_size = _CONTENT_HEADER.unpack_from(buffer, offset + 7)
    if class_id != _BASIC_PROPERTIES.INDEX:
        return None
    if body_size == 0:
        body_start = end = header_end
        frames = 1
    else:
        if size - header_end < 8:
            return None
        kind, body_channel, body_length = unpack_header(buffer, header_end)
        end = header_end + 8 + body_length
        if (
            kind != 3
            or body_channel != channel
            or body_length != body_size
            or end > size
            or buffer[end - 1] != _FRAME_END
        ):
            return None
        body_start = header_end + 7
        frames = 2
    properties = decode_properties(buffer, offset + 19, header_end - 1)
    if properties is None:
        return None
    header = pika.frame.Header(channel, body_size, properties)
    return header, buffer[body_start : body_start + body_size], end, frames


def _waiting_for_content(channel: Any) -> bool:
    """Whether ``channel`` is a plain pika channel whose assembler holds nothing yet."""
    if type(channel) is not pika.channel.Channel:
        return False
    assembler = channel._content_assembler
    return (
        assembler._method_frame is None
        and assembler._header_frame is None
        and not assembler._seen_so_far
        and not assembler._body_fragments
    )


def _waiting_for_header(channel: Any) -> bool:
    """Whether ``channel`` is a plain pika channel whose assembler holds a Basic.Deliver only."""
    if type(channel) is not pika.channel.Channel:
        return False
    assembler = channel._content_assembler
    held = assembler._method_frame
    return (
        held is not None
        and type(held.method) is _DELIVER
        and assembler._header_frame is None
        and not assembler._seen_so_far
        and not assembler._body_fragments
    )


_FRAME_END = pika.spec.FRAME_END


def read_frames_lean(connection: pika.connection.Connection) -> None:
    """Make ``connection`` read its inbound frames with less work per frame.

    pika decodes one frame at a time from the start of its buffer and copies
    what is left after each one (three frames and three copies per delivery),
    slicing a frame's payload twice on the way; each frame then goes through
    the connection's dispatch and the channel's content assembler. This reads
    the frames at an offset into the buffer and keeps what is left once per
    read. A whole delivery in the buffer (``_delivery_in``) for a plain pika
    channel whose assembler holds nothing, with no callback waiting for its
    Basic.Deliver, goes to the channel's ``_on_deliver`` at once, with the
    frames, body and counts that the assembler would have handed on: what the
    channel does with a delivery (a cancelled consumer, an unknown one, the
    consumer's callback) is pika's own. Otherwise header and body frames
    (which carry no method, so pika's callback table has nothing for them) go
    straight to their channel, and each frame is decoded from the same bytes
    by the same pika code as before (a method frame from its own payload, so
    a method running past its frame fails as it did); a protocol header, a
    heartbeat, any other frame type, and an incomplete frame go through
    pika's own decoder, unchanged. The header table's depth bound
    (``bound_header_depth``) is pika's table decoder's, so it applies here as
    it did.
    """
    end_marker = _FRAME_END
    methods, props = pika.spec.methods, pika.spec.props
    header_frame, body_frame, method_frame = pika.frame.Header, pika.frame.Body, pika.frame.Method
    unpack_header, unpack_method = _FRAME_HEADER.unpack_from, _METHOD_ID.unpack_from
    unpack_content = _CONTENT_HEADER.unpack_from
    decode_frame = pika.frame.decode_frame
    deliver_id = _DELIVER.INDEX
    content_in = _content_in

    def waits_for_deliver(value: pika.frame.Method) -> bool:
        """``connection._has_pending_callbacks(value)`` for a Basic.Deliver frame."""
        callbacks = connection.callbacks
        if type(callbacks) is not pika.callback.CallbackManager or plain_check is not (
            type(connection)._has_pending_callbacks
        ):
            return bool(connection._has_pending_callbacks(value))
        # pika's manager files callbacks under ``name_or_value`` of the channel
        # number and the method: ``str(number)`` and the method's ``NAME``.
        waiting = callbacks._stack.get(str(value.channel_number))
        return bool(waiting and waiting.get(deliver_name))

    plain_check = pika.connection.Connection._has_pending_callbacks
    deliver_name = _DELIVER.NAME

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
                if lean and channel > 0 and buffer[frame_end - 1] == end_marker:
                    target = connection._channels.get(channel)
                    if (
                        frame_type == 1
                        and length >= 4
                        and unpack_method(buffer, offset + 7)[0] == deliver_id
                        and _waiting_for_content(target)
                    ):
                        method = decode_deliver(buffer, offset + 11, frame_end - 1)
                        value = None if method is None else method_frame(channel, method)
                        if value is not None and not waits_for_deliver(value):
                            content = content_in(buffer, frame_end, size, channel)
                            if content is None:
                                # The content is still on its way: the Basic.Deliver
                                # waits in the channel's assembler, as in pika.
                                offset = frame_end
                                connection.bytes_received += length + 8
                                connection._process_frame(value)
                            else:
                                # What the frames' dispatch and the assembler do.
                                header, body, end, taken = content
                                connection.bytes_received += end - offset
                                connection.frames_received += 1 + taken
                                offset = end
                                target._on_deliver(value, header, body)
                            if connection._frame_buffer is not buffer:
                                return  # the connection was reset while this was handled
                            continue
                    elif frame_type == 2 and _waiting_for_header(target):
                        content = content_in(buffer, offset, size, channel)
                        if content is not None:
                            # The content of the Basic.Deliver the assembler holds.
                            header, body, end, taken = content
                            connection.bytes_received += end - offset
                            connection.frames_received += taken
                            offset = end
                            assembler = target._content_assembler
                            held = assembler._method_frame
                            assembler._reset()
                            target._on_deliver(held, header, body)
                            if connection._frame_buffer is not buffer:
                                return  # the connection was reset while this was handled
                            continue
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
