"""Bounds on JSON from outside, checked before it is parsed.

Python's ``json`` parser recurses once per nesting level: a document nested a few
thousand levels deep raises ``RecursionError`` (not ``ValueError``) in whatever
thread parses it, and one nested a little less deep parses but breaks later in
code that walks it (``json.dumps``, psycopg). A huge document costs memory many
times its size. So every JSON document fmn takes from outside (bus bodies,
preference files) goes through :func:`check_json_bounds` first, which measures
size and nesting depth without parsing and without recursion, in time linear in
the size, and raises :class:`~fmn_core.errors.InputTooLarge` naming the bound.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

from .errors import InputTooLarge

__all__ = ["check_json_bounds", "json_depth"]

# A JSON string with its escapes; possessive so a long string can't backtrack.
_STRING_BYTES = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_STRING_TEXT = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_NOT_SKELETON = bytes(b for b in range(256) if b not in b'"[]{}')
#: Opening brackets as the signed byte 1, closing ones as -1.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(raw: bytes | str) -> int:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar).

    Brackets inside strings don't count. For invalid JSON (an unterminated
    string, say) the answer may be too high, never too low, which is the safe side
    for a bound. A text and its UTF-8 encoding have the same depth: only ASCII
    characters (quotes, backslashes, brackets) decide it.
    """
    # Non-ASCII text can't contain quotes or brackets; only the ASCII skeleton matters.
    data = raw.encode("ascii", "ignore") if isinstance(raw, str) else raw
    brackets = None
    if b'\\"' not in data:
        # No quote is escaped: if every quote opens or closes a string (none is
        # left open), the text outside strings is every other part between
        # quotes. Cut from the quotes and brackets alone, in C.
        parts = data.translate(None, _NOT_SKELETON).split(b'"')
        if len(parts) % 2:
            brackets = b"".join(parts[::2])
    if brackets is None:
        if isinstance(raw, str):
            brackets = _STRING_TEXT.sub("", raw).encode("ascii", "ignore")
        else:
            brackets = _STRING_BYTES.sub(b"", raw)
        brackets = brackets.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    # +1 for an opening bracket, -1 for a closing one; the running sum in C.
    return max(0, max(accumulate(array("b", brackets.translate(_STEPS)))))


def _size(raw: bytes | str, max_bytes: int) -> int:
    if isinstance(raw, bytes | bytearray | memoryview):
        return len(raw)
    # Each character is 1 to 4 bytes of UTF-8: only encode when it could matter.
    if len(raw) > max_bytes or len(raw) * 4 <= max_bytes:
        return len(raw)
    return len(raw.encode("utf-8", "surrogatepass"))


def check_json_bounds(raw: bytes | str, *, max_bytes: int, max_depth: int) -> None:
    """Refuse a JSON text larger than ``max_bytes`` (UTF-8) or nesting arrays and
    objects deeper than ``max_depth``, before anything parses it.

    Raises ``InputTooLarge`` (with ``bound`` ``"bytes"`` or ``"depth"``).
    """
    size = _size(raw, max_bytes)
    if size > max_bytes:
        raise InputTooLarge("bytes", max_bytes, size)
    depth = json_depth(bytes(raw) if isinstance(raw, bytearray | memoryview) else raw)
    if depth > max_depth:
        raise InputTooLarge("depth", max_depth, depth)
