"""Size and depth bounds on outside JSON, checked before parsing (fmn_core.bounds)."""

from __future__ import annotations

import json
import random
import re
import sys
import time
from itertools import accumulate

import pytest

from fmn_core.bounds import check_json_bounds, json_depth
from fmn_core.errors import InputTooLarge


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("5", 0),
        ('"[[[["', 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["\\"[[[", ["\\\\"], "]]]"]', 2),
        ('{"a": "\\u005b\\u005b"}', 1),
        ("[1] [[2]]", 2),
        ('["\u00e9[", {"\u2603": ["\U0001f600"]}]', 3),
    ],
)
def test_json_depth_counts_only_structure(text: str, depth: int) -> None:
    assert json_depth(text) == depth
    assert json_depth(text.encode("utf-8")) == depth
    if text.startswith(("[", "{", "5")) and " [" not in text:
        assert _parsed_depth(json.loads(text)) == depth


def _parsed_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_parsed_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_parsed_depth(v) for v in value), default=0)
    return 0


def test_json_depth_of_text_agrees_with_the_string_pattern_on_any_text() -> None:
    """Text without escaped quotes is cut at its quotes; bytes always go through the
    pattern. Both must give the same depth for any mix of brackets, quotes and escapes."""
    import random

    pieces = ["[", "]", "{", "}", '"', "\\", "a", ",", "\u00e9", '\\"', '"]"', '"[\\""', '"\\\\"']
    rng = random.Random(16)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert json_depth(text) == json_depth(text.encode("utf-8")), text


def test_json_depth_of_an_unterminated_string_errs_high() -> None:
    assert json_depth('["abc, [[[') >= 1


def test_json_depth_is_not_recursive_and_is_fast() -> None:
    deep = "[" * 1_000_000 + "]" * 1_000_000
    started = time.monotonic()
    assert json_depth(deep) == 1_000_000 > sys.getrecursionlimit()
    assert time.monotonic() - started < 5


def test_check_json_bounds_names_the_bound() -> None:
    check_json_bounds("[[1]]", max_bytes=5, max_depth=2)
    with pytest.raises(InputTooLarge) as caught:
        check_json_bounds("[[[1]]]", max_bytes=100, max_depth=2)
    assert (caught.value.bound, caught.value.limit, caught.value.found) == ("depth", 2, 3)
    assert str(caught.value) == "nests arrays and objects 3 levels deep; at most 2"
    with pytest.raises(InputTooLarge) as caught:
        check_json_bounds(b"[" + b"1," * 10 + b"1]", max_bytes=10, max_depth=5)
    assert caught.value.bound == "bytes" and "at most 10" in str(caught.value)
    # Text is measured in UTF-8 bytes, not characters.
    with pytest.raises(InputTooLarge):
        check_json_bounds('"' + "\u20ac" * 4 + '"', max_bytes=12, max_depth=5)
    check_json_bounds('"' + "\u20ac" * 3 + '"', max_bytes=12, max_depth=5)


# -- json_depth against the walk it replaced ----------------------------------------------

_REFERENCE_STRING_BYTES = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_REFERENCE_STRING_TEXT = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_REFERENCE_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _reference_depth(raw: bytes | str) -> int:
    """``json_depth`` as it was: strings cut from the text, brackets walked one at a time."""
    if isinstance(raw, str):
        parts = raw.split('"')
        if len(parts) % 2 and '\\"' not in raw:
            data = "".join(parts[::2]).encode("ascii", "ignore")
        else:
            data = _REFERENCE_STRING_TEXT.sub("", raw).encode("ascii", "ignore")
    else:
        data = _REFERENCE_STRING_BYTES.sub(b"", raw)
    brackets = data.translate(None, bytes(b for b in range(256) if b not in b"[]{}"))
    if not brackets:
        return 0
    return max(0, max(accumulate(_REFERENCE_STEP[b] for b in brackets)))


def test_json_depth_is_the_reference_walk_on_text_and_its_utf8() -> None:
    rng = random.Random(16)
    # Quotes, escapes (a backslash before a quote, a backslash, a non-ASCII
    # character), brackets in and out of strings, unbalanced and invalid text.
    alphabet = ['"', "\\", "[", "]", "{", "}", "a", ":", ",", " ", "é", "☃", "\U0001f600", "\\é"]
    texts = ['"\\é"[[[', '["\\é", "]"]', "\\" * 5 + '"[', "]]]][[[", '"' * 7 + "[{"]
    for _ in range(20_000):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))))
    for text in texts:
        expected = _reference_depth(text)
        assert json_depth(text) == expected, text
        encoded = text.encode("utf-8")
        assert json_depth(encoded) == _reference_depth(encoded) == expected, text
