"""pika's header decoder, bounded: deep tables and arrays are cut, never recursed into."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pika.spec

from fmn_core.config import IngestConfig
from fmn_core.errors import MalformedMessage
from fmn_core.messages import check_headers, value_depth
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
