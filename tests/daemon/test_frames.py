"""pika's header decoder, bounded: deep tables and arrays are cut, never recursed into."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import sys
import threading
from typing import Any

import pika.callback
import pika.connection
import pika.data
import pika.frame
import pika.spec
import pytest

from fmn_core.config import IngestConfig
from fmn_core.errors import MalformedMessage
from fmn_core.messages import check_headers, value_depth
from fmn_daemon import frames
from fmn_daemon.frames import CUT_MARKER, bound_header_depth, header_depth_limit


def encoded_properties(headers: dict[str, Any]) -> bytes:
    """The properties frame payload for ``headers`` (pika's encoder recurses: a big stack)."""
    out: list[bytes] = []

    def run() -> None:
        out.append(b"".join(pika.spec.BasicProperties(headers=headers).encode()))

    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size(256 * 1024 * 1024)
    sys.setrecursionlimit(20_000)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    finally:
        sys.setrecursionlimit(old_limit)
        threading.stack_size(old_stack)
    return out[0]


def decoded_headers(encoded: bytes) -> dict[str, Any]:
    properties = pika.spec.BasicProperties()
    properties.decode(encoded)
    assert isinstance(properties.headers, dict)
    return properties.headers


def test_frames_cut_tables_and_arrays_nested_3000_levels() -> None:
    bound_header_depth(16)
    assert header_depth_limit() == 16
    headers: Any = "leaf"
    for level in range(3000):
        headers = {"t": headers} if level % 2 else {"a": [headers, 1]}
    decoded = decoded_headers(encoded_properties({"deep": headers, "after": "kept"}))
    assert decoded["after"] == "kept"  # the rest of the table is read past the cut
    assert value_depth(decoded) == 17
    stack: list[Any] = [decoded]
    found = False
    while stack:
        item = stack.pop()
        if item == CUT_MARKER:
            found = True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    assert found
    try:
        check_headers(decoded, IngestConfig())
    except MalformedMessage as exc:
        assert "more than 16 levels" in str(exc)
    else:
        raise AssertionError("cut headers must be refused")


def test_frames_leave_headers_within_the_limit_alone() -> None:
    bound_header_depth(16)
    headers = {
        "fedora_messaging_schema": "base.message",
        "sent-at": "2026-12-05T18:00:00+00:00",
        "nested": {"a": [1, {"b": "c"}]},
        "priority": 0,
    }
    assert decoded_headers(encoded_properties(headers)) == headers
    check_headers(headers, IngestConfig())


# -- the table decoder and the lean frame reader, against pika's own ------------------


def _outcome(read: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", read(*args)
    except Exception as exc:  # the same failure, whatever it is
        return type(exc).__name__, None


TABLES: list[dict[str, Any]] = [
    {},
    {"fedora_messaging_schema": "base.message", "sent-at": "2026-12-06T02:49:03+00:00"},
    {"fedora_messaging_severity": 20, "big": 2**40, "negative": -7, "flag": True, "no": False},
    {"none": None, "ü-key": "välue ✓", "empty": ""},
    {"nested": {"a": [1, "two", {"b": None}], "c": {"d": {"e": "f"}}}, "after": "x"},
    {
        "raw": b"\xff\xfe not utf-8",
        "dec": decimal.Decimal("1.25"),
        "when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    },
]


def test_the_table_decoder_reads_what_pikas_reads() -> None:
    bound_header_depth(16)
    assert pika.data.decode_table is not frames.PIKA_DECODE_TABLE
    for table in TABLES:
        encoded = encoded_properties(table)
        # The table starts after the 2-byte flags; the frame around it can be longer.
        for data in (encoded, encoded + b"\x00\x01tail"):
            assert pika.data.decode_table(data, 2) == frames.PIKA_DECODE_TABLE(data, 2)
        assert decoded_headers(encoded) == table


def test_the_table_decoder_reads_undecodable_keys_and_strings_as_bytes() -> None:
    bound_header_depth(16)
    body = b"\x03k\xffy" + b"S" + struct.pack(">I", 3) + b"\xfe\xfd!" + b"\x01kS\x00\x00\x00\x01v"
    data = struct.pack(">I", len(body)) + body
    decoded = pika.data.decode_table(data, 0)
    assert decoded == frames.PIKA_DECODE_TABLE(data, 0)
    assert decoded[0] == {b"k\xffy": b"\xfe\xfd!", "k": "v"}


def test_the_table_decoder_fails_where_pikas_fails() -> None:
    bound_header_depth(16)
    encoded = encoded_properties(
        {"a": "string value", "n": -(2**62), "b": True, "t": {"x": [1, 2]}}
    )
    for cut in range(2, len(encoded)):
        truncated = encoded[:cut]
        assert _outcome(pika.data.decode_table, truncated, 2) == _outcome(
            frames.PIKA_DECODE_TABLE, truncated, 2
        ), cut
    # A string longer than its table, and an unknown value type.
    lying = struct.pack(">I", 8) + b"\x01aS" + struct.pack(">I", 1000) + b"xy"
    unknown = struct.pack(">I", 4) + b"\x01a?\x00"
    for data in (lying, unknown):
        assert _outcome(pika.data.decode_table, data, 0) == _outcome(
            frames.PIKA_DECODE_TABLE, data, 0
        )


class _Channel:
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def _handle_content_frame(self, frame_value: Any) -> None:
        self.seen.append(("channel", _describe(frame_value)))


class _Connection(pika.connection.Connection):  # type: ignore[misc]
    """pika's frame reading on an object with no socket: frames are recorded."""

    def __init__(self) -> None:  # pika's would open a connection
        self.seen: list[Any] = []
        self._frame_buffer = b""
        self.bytes_received = 0
        self.frames_received = 0
        self._heartbeat_checker = None
        self.callbacks = pika.callback.CallbackManager()
        self._channels = {1: _Channel(self.seen)}

    def _process_frame(self, frame_value: Any) -> None:
        if isinstance(frame_value, pika.frame.Method):
            self.seen.append(("method", _describe(frame_value)))
        super()._process_frame(frame_value)

    def _init_connection_state(self) -> None:
        self._frame_buffer = b""


_Connection.__abstractmethods__ = frozenset()


def _describe(value: Any) -> Any:
    if isinstance(value, pika.frame.Method):
        return ("M", value.channel_number, type(value.method).__name__, vars(value.method))
    if isinstance(value, pika.frame.Header):
        return ("H", value.channel_number, value.body_size, vars(value.properties))
    if isinstance(value, pika.frame.Body):
        return ("B", value.channel_number, value.fragment)
    return (type(value).__name__, getattr(value, "channel_number", None))


def _delivery(tag: int, headers: dict[str, Any], body: bytes, channel: int = 1) -> bytes:
    properties = pika.spec.BasicProperties(
        content_encoding="utf-8", headers=headers, message_id=f"id-{tag}"
    )
    deliver = pika.spec.Basic.Deliver("ctag", tag, False, "ex", "org.fedoraproject.test")
    return bytes(
        pika.frame.Method(channel, deliver).marshal()
        + pika.frame.Header(channel, len(body), properties).marshal()
        + pika.frame.Body(channel, body).marshal()
    )


def _feed(stream: bytes, step: int, *, lean: bool) -> tuple[Any, ...]:
    connection = _Connection()
    if lean:
        frames.read_frames_lean(connection)
    failure = None
    for start in range(0, len(stream), step):
        try:
            connection._on_data_available(stream[start : start + step])
        except Exception as exc:  # the same failure, at the same frame
            failure = type(exc).__name__
            break
    return (
        connection.seen,
        connection.bytes_received,
        connection.frames_received,
        connection._frame_buffer,
        failure,
    )


def _stream() -> bytes:
    return b"".join(
        (
            _delivery(1, TABLES[1], b'{"a": 1}'),
            pika.frame.Heartbeat().marshal(),
            _delivery(2, TABLES[4], b"x" * 5000),
            pika.frame.Method(1, pika.spec.Basic.CancelOk("ctag")).marshal(),
            _delivery(3, {}, b""),
            pika.frame.Method(0, pika.spec.Connection.Blocked("low memory")).marshal(),
            _delivery(4, TABLES[2], b"[]", channel=2),  # no such channel: pika logs it
            _delivery(5, TABLES[3], "ü".encode() * 100),
        )
    )


@pytest.mark.parametrize("step", [1, 7, 8, 100, 4096, 1 << 20])
def test_lean_frames_hand_on_what_pika_hands_on(step: int) -> None:
    bound_header_depth(16)
    stream = _stream()
    lean = _feed(stream, step, lean=True)
    assert lean == _feed(stream, step, lean=False)
    seen, received, counted, rest, failure = lean
    assert (received, rest, failure) == (len(stream), b"", None)
    assert counted == 3 * 5 + 3
    assert [kind for kind, _ in seen].count("method") == 7


@pytest.mark.parametrize(
    "damage",
    [
        "end marker",
        "short header",
        "unknown type",
        "unknown method",
        "method past its frame",
        "reset",
    ],
)
def test_lean_frames_fail_where_pika_fails(damage: str) -> None:
    bound_header_depth(16)
    good = _delivery(1, TABLES[1], b"{}")
    bad = bytearray(_delivery(2, TABLES[1], b"{}"))
    if damage == "end marker":
        bad[-1] = 0
    elif damage == "short header":
        bad = bytearray(
            pika.frame.Method(1, pika.spec.Basic.Deliver("c", 2, False, "e", "t")).marshal()
            + struct.pack(">BHL", 2, 1, 4)
            + b"\x00\x3c\x00\x00\xce"
        )
    elif damage == "unknown type":
        bad = bytearray(struct.pack(">BHL", 9, 1, 1) + b"\x00\xce")
    elif damage == "unknown method":
        bad = bytearray(struct.pack(">BHL", 1, 1, 4) + b"\x7f\x7f\x7f\x7f\xce")
    elif damage == "method past its frame":
        method = pika.frame.Method(1, pika.spec.Basic.Deliver("c", 2, False, "e", "t")).marshal()
        bad = bytearray(method[:3] + struct.pack(">L", 10) + method[7:17] + b"\xce" + method[7:])
    stream = good + bytes(bad) + good
    for step in (1, 50, 1 << 20):
        lean, plain = _feed(stream, step, lean=True), _feed(stream, step, lean=False)
        assert lean == plain, (damage, step)
    if damage == "reset":
        # A frame whose handling resets the connection's state ends the read there.
        ends = []
        for leanly in (True, False):
            connection = _Connection()
            if leanly:
                frames.read_frames_lean(connection)

            def reset_on_body(
                value: Any,
                connection: _Connection = connection,
                original: Any = connection._deliver_frame_to_channel,
            ) -> None:
                original(value)
                if isinstance(value, pika.frame.Body):
                    connection._init_connection_state()

            connection._deliver_frame_to_channel = reset_on_body
            connection._on_data_available(stream)
            ends.append((connection.seen, connection._frame_buffer, connection.bytes_received))
        assert ends[0] == ends[1]
        assert ends[0][1] == b""
        assert [k for k, _ in ends[0][0]] == ["method", "channel", "channel", "channel"]
