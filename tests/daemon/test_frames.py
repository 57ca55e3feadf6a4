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


class _Socketless(pika.connection.Connection):  # type: ignore[misc]
    """A pika connection's state for reading frames, without a socket."""

    def __init__(self) -> None:  # pika's would open a connection
        self.seen: list[Any] = []
        self._frame_buffer = b""
        self.bytes_received = 0
        self.frames_received = 0
        self._heartbeat_checker = None
        self.callbacks = pika.callback.CallbackManager()


class _Connection(_Socketless):
    """pika's frame reading on an object with no socket: frames are recorded."""

    def __init__(self) -> None:
        super().__init__()
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


def _fed(connection: Any, stream: bytes, step: int, *, lean: bool) -> str | None:
    """Feed ``stream`` to ``connection`` in reads of ``step`` bytes; the failure's name, if any."""
    if lean:
        frames.read_frames_lean(connection)
    for start in range(0, len(stream), step):
        try:
            connection._on_data_available(stream[start : start + step])
        except Exception as exc:  # the same failure, at the same frame
            return type(exc).__name__
    return None


def _feed(stream: bytes, step: int, *, lean: bool) -> tuple[Any, ...]:
    connection = _Connection()
    failure = _fed(connection, stream, step, lean=lean)
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


# -- the properties and Basic.Deliver read in place, against pika's decoders -------------

PROPERTIES: list[pika.spec.BasicProperties] = [
    pika.spec.BasicProperties(),
    pika.spec.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        headers=TABLES[2],
        message_id="2b7e1f0a-5c1d-4a8e-9f3b-0c6d2e8a1b4f",
    ),
    pika.spec.BasicProperties(headers={}, priority=9, timestamp=1_765_000_000),
    pika.spec.BasicProperties(message_id="ü✓", content_type=""),
    # Properties fedora-messaging does not send: pika's own decoder reads them.
    pika.spec.BasicProperties(correlation_id="c", reply_to="r", expiration="60000"),
    pika.spec.BasicProperties(type="t", user_id="guest", app_id="a", cluster_id="x"),
    pika.spec.BasicProperties(
        content_type="text/plain",
        content_encoding="latin-1",
        headers=TABLES[5],
        delivery_mode=1,
        priority=0,
        correlation_id="c",
        reply_to="r",
        expiration="1",
        message_id="m",
        timestamp=0,
        type="t",
        user_id="u",
        app_id="a",
        cluster_id="x",
    ),
]


def _pika_properties(payload: bytes) -> tuple[str, Any]:
    properties = pika.spec.BasicProperties()
    try:
        properties.decode(payload)
    except Exception as exc:  # the failure itself is compared
        return type(exc).__name__, None
    return "ok", vars(properties)


def _in_place(decode: Any, payload: bytes, *args: Any) -> Any:
    """``decode`` of ``payload`` between other bytes, as it sits in a read buffer."""
    buffer = b"\x01\x02\x03" + payload + b"\xce\x01\x00\x01\x00\x00\x00\x08S\x00\x00\xff\xff"
    return decode(buffer, 3, *args, 3 + len(payload))


def test_properties_read_in_place_are_pikas_or_left_to_pika() -> None:
    bound_header_depth(16)
    for original in PROPERTIES:
        payload = b"".join(original.encode())
        read = _in_place(frames.decode_properties, payload)
        expected = _pika_properties(payload)
        assert expected[0] == "ok"
        if read is None:  # only for what fedora-messaging never sends
            assert any(
                getattr(original, name) is not None
                for name in (
                    "correlation_id",
                    "reply_to",
                    "expiration",
                    "type",
                    "user_id",
                    "app_id",
                    "cluster_id",
                )
            )
            continue
        assert type(read) is pika.spec.BasicProperties
        assert list(vars(read).items()) == list(expected[1].items())  # the same order too
    # What a fedora-messaging publisher sends is read in place.
    assert _in_place(frames.decode_properties, b"".join(PROPERTIES[1].encode())) is not None


def test_properties_read_in_place_never_differ_where_pika_fails_or_cuts() -> None:
    bound_header_depth(16)
    payload = b"".join(PROPERTIES[1].encode())
    damaged = [payload[:cut] for cut in range(len(payload))]
    damaged += [
        payload + b"extra",  # pika reads the properties and leaves the rest
        b"\x80\x00\x05ab",  # a short string running past the payload: pika cuts it
        b"\x20\x00" + struct.pack(">I", 400) + b"\x01aS",  # a table running past it
        b"\x20\x00\x00\x00\x00\x04\x01a?\x00",  # an unknown value type
        b"\xd8\x81\x00\x00",  # a second flag word
        b"\x00\x02",  # a reserved flag bit
    ]
    for data in damaged:
        read = _in_place(frames.decode_properties, data)
        outcome, expected = _pika_properties(data)
        if read is not None:
            assert (outcome, vars(read)) == ("ok", expected), data
    # Cut short, the in-place reader never answers: pika decides, failing as it does.
    assert all(_in_place(frames.decode_properties, data) is None for data in damaged[:-6])


def _pika_deliver(payload: bytes) -> tuple[str, Any]:
    try:
        return "ok", vars(pika.spec.Basic.Deliver().decode(payload))
    except Exception as exc:  # the failure itself is compared
        return type(exc).__name__, None


def test_deliver_read_in_place_is_pikas_or_left_to_pika() -> None:
    methods = [
        pika.spec.Basic.Deliver("ctag", 1, False, "", "t"),
        pika.spec.Basic.Deliver("c" * 255, 2**64 - 1, True, "amq.topic", "org.fedoraproject.x"),
        pika.spec.Basic.Deliver("ü", 7, True, "é", "✓"),
    ]
    for method in methods:
        payload = b"".join(method.encode())
        read = _in_place(frames.decode_deliver, payload)
        assert read is not None and type(read) is pika.spec.Basic.Deliver
        assert list(vars(read).items()) == list(_pika_deliver(payload)[1].items())
        for cut in range(len(payload)):
            assert _in_place(frames.decode_deliver, payload[:cut]) is None
        extra = _in_place(frames.decode_deliver, payload + b"more")
        assert vars(extra) == _pika_deliver(payload + b"more")[1]
    raw = b"\x02\xff\xfe" + struct.pack(">Q", 5) + b"\x00\x00\x01\xff"
    assert vars(_in_place(frames.decode_deliver, raw)) == _pika_deliver(raw)[1]


# -- whole deliveries handed to a real pika channel, against pika's own path -------------


class _Consumer:
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def __call__(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.seen.append(("delivery", type(method).__name__, vars(method), vars(properties), body))


class _PikaChannels(_Socketless):
    """pika's frame reading, dispatch and channels, on an object with no socket."""

    def __init__(self) -> None:
        super().__init__()
        self._channels = {}
        for number in (1, 3):
            channel = pika.channel.Channel(self, number, None)
            channel._consumers["ctag"] = _Consumer(self.seen)
            self._channels[number] = channel
        # A method with content that nothing consumes: the assembler's other paths.
        self._channels[3]._on_getok_callback = lambda *parts: self.seen.append(("getok", parts[3]))

    def _init_connection_state(self) -> None:
        self._frame_buffer = b""

    def state(self) -> tuple[Any, ...]:
        assemblers = [
            vars(self._channels[n]._content_assembler).get("_seen_so_far") for n in (1, 3)
        ]
        return (
            self.seen,
            self.bytes_received,
            self.frames_received,
            self._frame_buffer,
            assemblers,
        )


_PikaChannels.__abstractmethods__ = frozenset()


def _frames_of(tag: int, body: bytes, channel: int = 1, **options: Any) -> bytes:
    properties = options.pop("properties", None) or pika.spec.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        headers=TABLES[1],
        message_id=f"id-{tag}",
    )
    deliver = pika.spec.Basic.Deliver(options.pop("ctag", "ctag"), tag, False, "ex", "org.x")
    parts = [pika.frame.Method(channel, deliver).marshal()]
    parts.append(pika.frame.Header(channel, len(body), properties).marshal())
    pieces = options.pop("pieces", 1)
    step = -(-len(body) // pieces) if body else 1
    parts += [
        pika.frame.Body(channel, body[i : i + step]).marshal() for i in range(0, len(body), step)
    ]
    return b"".join(parts)


def _channel_stream() -> bytes:
    getok = pika.spec.Basic.GetOk(9, False, "ex", "org.x", 0)
    return b"".join(
        (
            _frames_of(1, b'{"a": 1}'),
            _frames_of(2, b"x" * 5000),
            pika.frame.Heartbeat().marshal(),
            _frames_of(3, b""),
            _frames_of(4, b"y" * 3000, pieces=3),  # a body in three frames
            _frames_of(5, b"[]", channel=2),  # no such channel: pika logs it
            _frames_of(6, b"z", ctag="unknown"),  # no such consumer: pika logs it
            _frames_of(7, "ü".encode() * 100, channel=3),
            pika.frame.Method(3, getok).marshal(),
            pika.frame.Header(3, 2, pika.spec.BasicProperties()).marshal(),
            pika.frame.Body(3, b"ok").marshal(),
            pika.frame.Method(1, pika.spec.Basic.CancelOk("ctag")).marshal(),
            _frames_of(8, b"{}", properties=PROPERTIES[4]),  # properties pika reads
            _frames_of(9, b"{}", properties=PROPERTIES[6]),
            _frames_of(10, b"[1]" * 700),
        )
    )


def _feed_channels(stream: bytes, step: int, *, lean: bool) -> tuple[Any, ...]:
    connection = _PikaChannels()
    failure = _fed(connection, stream, step, lean=lean)
    return (*connection.state(), failure)


@pytest.mark.parametrize("step", [1, 7, 19, 20, 100, 1000, 4096, 1 << 20])
def test_whole_deliveries_reach_the_consumer_as_through_pika(step: int) -> None:
    bound_header_depth(16)
    stream = _channel_stream()
    lean = _feed_channels(stream, step, lean=True)
    assert lean == _feed_channels(stream, step, lean=False)
    seen, received, _, rest, assemblers, failure = lean
    assert (received, rest, assemblers, failure) == (len(stream), b"", [0, 0], None)
    assert [entry[0] for entry in seen].count("delivery") == 8
    assert ("getok", b"ok") in seen


def test_a_callback_waiting_for_a_deliver_gets_it_as_through_pika() -> None:
    bound_header_depth(16)
    stream = _frames_of(1, b"{}") + _frames_of(2, b"[]")
    outcomes = []
    for lean in (True, False):
        connection = _PikaChannels()
        if lean:
            frames.read_frames_lean(connection)
        connection.callbacks.add(
            1,
            pika.spec.Basic.Deliver,
            lambda frame, seen=connection.seen: seen.append(("callback", _describe(frame))),
        )
        try:
            connection._on_data_available(stream)
        except AttributeError:  # pika's assembler then has content without a method
            connection.seen.append(("failed",))
        outcomes.append(connection.state())
    assert outcomes[0] == outcomes[1]
    assert ("failed",) in outcomes[0][0]
    # The callback takes the first Basic.Deliver; the rest goes on as pika sends it.
    assert outcomes[0][0][0] == ("callback", _describe(pika.frame.Method(1, _deliver_of(1))))


def _deliver_of(tag: int) -> pika.spec.Basic.Deliver:
    return pika.spec.Basic.Deliver("ctag", tag, False, "ex", "org.x")


@pytest.mark.parametrize(
    "damage",
    ["header end marker", "body end marker", "body too long", "short properties", "reset"],
)
def test_whole_deliveries_fail_where_pika_fails(damage: str) -> None:
    bound_header_depth(16)
    good = _frames_of(1, b"{}")
    bad = bytearray(_frames_of(2, b"{}"))
    method_length = len(pika.frame.Method(1, _deliver_of(2)).marshal())
    header_end = len(bad) - 10
    if damage == "header end marker":
        bad[header_end - 1] = 0
    elif damage == "body end marker":
        bad[-1] = 0
    elif damage == "body too long":
        bad = bytearray(
            pika.frame.Method(1, _deliver_of(2)).marshal()
            + pika.frame.Header(1, 1, pika.spec.BasicProperties()).marshal()
            + pika.frame.Body(1, b"{}").marshal()
        )
    elif damage == "short properties":
        bad = bytearray(
            bytes(bad[:method_length])
            + struct.pack(">BHL", 2, 1, 14)
            + struct.pack(">HHQ", 60, 0, 2)
            + b"\x80\x00\xce"  # a content type whose length is missing
            + pika.frame.Body(1, b"{}").marshal()
        )
    stream = good + bytes(bad) + good
    for step in (1, 50, 1 << 20):
        lean, plain = (
            _feed_channels(stream, step, lean=True),
            _feed_channels(stream, step, lean=False),
        )
        assert lean == plain, (damage, step)
    if damage == "reset":
        ends = []
        for leanly in (True, False):
            connection = _PikaChannels()
            if leanly:
                frames.read_frames_lean(connection)
            consumer = connection._channels[1]._consumers["ctag"]

            def reset_on_delivery(
                *parts: Any, connection: Any = connection, consumer: Any = consumer
            ) -> None:
                consumer(*parts)
                connection._init_connection_state()

            connection._channels[1]._consumers["ctag"] = reset_on_delivery
            connection._on_data_available(stream)
            ends.append(connection.state())
        assert ends[0] == ends[1]
        assert [entry[0] for entry in ends[0][0]] == ["delivery"]


def test_whole_deliveries_skip_the_assembler(monkeypatch: pytest.MonkeyPatch) -> None:
    bound_header_depth(16)
    frames_seen: list[Any] = []
    process = pika.channel.ContentFrameAssembler.process

    def counting(self: Any, frame_value: Any) -> Any:
        frames_seen.append(type(frame_value).__name__)
        return process(self, frame_value)

    monkeypatch.setattr(pika.channel.ContentFrameAssembler, "process", counting)
    stream = b"".join(_frames_of(tag, b"{}") for tag in range(1, 4))
    # Whole in one read: no frame goes through the assembler.
    assert _feed_channels(stream, 1 << 20, lean=True) == _feed_channels(stream, 1 << 20, lean=False)
    assert len(frames_seen) == 9
    frames_seen.clear()
    _feed_channels(stream, 1 << 20, lean=True)
    assert frames_seen == []
    # Cut after each Basic.Deliver: it waits in the assembler, its content does not.
    method_length = len(pika.frame.Method(1, _deliver_of(1)).marshal())
    connection = _PikaChannels()
    frames.read_frames_lean(connection)
    connection._on_data_available(stream[:method_length])
    connection._on_data_available(stream[method_length:])
    assert frames_seen == ["Method"]
    assert [entry[2]["delivery_tag"] for entry in connection.seen] == [1, 2, 3]
