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
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import pika.data

__all__ = ["CUT_MARKER", "bound_header_depth", "header_depth_limit"]

#: What stands for a table or array nested deeper than the limit.
CUT_MARKER: dict[str, Any] = {"x-fmn-cut": "nested too deeply"}

_lock = threading.Lock()
_state = threading.local()
_limit = 16
_original: Callable[[bytes, int], tuple[Any, int]] | None = None


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


def bound_header_depth(limit: int) -> None:
    """Make pika cut header tables nested deeper than ``limit`` (the top table is level 1)."""
    global _limit, _original
    with _lock:
        _limit = max(1, limit)
        if _original is None:
            _original = pika.data.decode_value
            pika.data.decode_value = _bounded_decode_value
