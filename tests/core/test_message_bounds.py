"""Bus input is bounded before it is parsed (issue 10): sizes, depths, the [ingest] settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmn_core.bounds import json_depth
from fmn_core.config import IngestConfig, load_config
from fmn_core.errors import ConfigError, MalformedMessage
from fmn_core.messages import (
    check_headers,
    check_json_text,
    parse_line,
    value_depth,
)
from fmn_core.rendering import render
from fmn_core.text import has_control

from .test_rendering import claimed


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": null}]}', 3),
        ('{"a": "[[[[{{{{"}', 1),
        ('{"a": "\\"[[[", "b": [[]]}', 3),
        ('"just a string"', 0),
        ("[" * 10_000 + "]" * 10_000, 10_000),
    ],
)
def test_json_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_takes_no_recursion_for_a_million_levels() -> None:
    assert json_depth("[" * 1_000_000) == 1_000_000


def test_check_json_text_refuses_past_the_limit_only() -> None:
    check_json_text('{"a": ' * 64 + "1" + "}" * 64, max_depth=64)
    with pytest.raises(MalformedMessage, match="nested 65 levels deep; at most 64"):
        check_json_text('{"a": ' * 65 + "1" + "}" * 65, max_depth=64)


def test_value_depth_and_headers_bounds() -> None:
    assert value_depth({"a": [{"b": 1}]}) == 3
    deep: dict[str, object] = {"x": 1}
    for _ in range(5000):
        deep = {"x": deep}
    assert value_depth(deep, stop_after=16) == 17
    with pytest.raises(MalformedMessage, match=r"ingest\.max_header_depth"):
        check_headers(deep, IngestConfig())
    with pytest.raises(MalformedMessage, match=r"ingest\.max_header_bytes"):
        check_headers({"big": "x" * 70_000}, IngestConfig())
    check_headers({"fedora_messaging_schema": "base.message", "sent-at": "now"}, IngestConfig())


def test_corpus_fits_well_inside_the_default_bounds(corpus: list[str]) -> None:
    """The defaults are far above any real Fedora message (docs/reliability.md quotes these)."""
    limits = IngestConfig()
    widest = deepest = header_bytes = header_depth = 0
    for line in corpus:
        data = json.loads(line)
        body = json.dumps(data["body"])
        widest = max(widest, len(body.encode()))
        deepest = max(deepest, json_depth(body))
        headers = data.get("headers") or {}
        header_bytes = max(header_bytes, len(json.dumps(headers).encode()))
        header_depth = max(header_depth, value_depth(headers))
        parse_line(line, limits)
    assert widest * 10 < limits.max_body_bytes
    assert deepest * 4 < limits.max_depth
    assert header_bytes * 10 < limits.max_header_bytes
    assert header_depth * 4 < limits.max_header_depth


def test_parse_line_refuses_what_replay_used_to_choke_on() -> None:
    base = {"topic": "org.fedoraproject.prod.x.y", "headers": {}, "body": {"a": 1}}
    with pytest.raises(MalformedMessage, match='no "id"'):
        parse_line(json.dumps(base))
    with pytest.raises(MalformedMessage, match='no "id"'):
        parse_line(json.dumps(dict(base, id=None)))
    with pytest.raises(MalformedMessage, match="NaN is not a JSON value"):
        parse_line(json.dumps(dict(base, id="n", body={"x": float("nan")})))
    with pytest.raises(MalformedMessage, match="nested"):
        parse_line('{"id": "d", "body": ' + "[" * 10_000 + "]" * 10_000 + "}")
    small = IngestConfig(max_body_bytes=1024, max_header_bytes=256)
    with pytest.raises(MalformedMessage, match="at most"):
        parse_line(json.dumps(dict(base, id="big", body={"b": "x" * 10_000})), small)
    assert parse_line(json.dumps(dict(base, id="ok"))).id == "ok"


def test_ingest_settings_are_validated_and_named(tmp_path: Path) -> None:
    path = tmp_path / "fmn.toml"
    path.write_text("[ingest]\nmax_body_bytes = 100\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "ingest.max_body_bytes"
    path.write_text("[ingest]\nmax_depth = 5000\n")
    with pytest.raises(ConfigError, match=r"ingest\.max_depth"):
        load_config(path)
    path.write_text("[ingest]\nmax_heap = 1\n")
    with pytest.raises(ConfigError, match=r"ingest\.max_heap"):
        load_config(path)
    path.write_text("[ingest]\nmax_depth = 32\nmax_attempts = 5\n")
    config = load_config(path)
    assert config.ingest.max_depth == 32 and config.ingest.max_attempts == 5


def test_mail_headers_never_carry_control_characters() -> None:
    """A topic with ESC/BEL/SOH or CR/LF reached Subject: and X-Fedmsg-Topic: raw."""
    hostile = claimed(
        topic="org.fedoraproject.prod.evil\x1b[2J\x07\x01\r\nBcc: victim@example.org",
        summary="summary\r\nX-Injected: 1\x1b",
        message_id="id\r\nX-Forged: yes",
    )
    rendered = render(hostile)
    assert not has_control(rendered.subject)
    for name, value in rendered.headers.items():
        assert not has_control(value), name
        assert "\n" not in value and "\r" not in value
    assert "\x1b" not in rendered.text and "\x07" not in rendered.text


@pytest.mark.parametrize(
    "value",
    ["x", "é" * 10, "\x00\x1f" * 10, "✓" * 7, "\U0001f600" * 5, '"\\' * 9, 0, -(10**19), 1.5e-300],
)
def test_flat_headers_are_refused_exactly_at_the_byte_limit(value: object) -> None:
    """The cheap size bound of flat headers never lets through what measuring refuses."""
    for width in range(1, 40):
        headers = {f"k{i}": value for i in range(width)}
        size = len(json.dumps(headers, ensure_ascii=False).encode("utf-8"))
        check_headers(headers, IngestConfig(max_header_bytes=max(size, 256)))
        if size > 256:
            with pytest.raises(MalformedMessage, match=r"ingest\.max_header_bytes"):
                check_headers(headers, IngestConfig(max_header_bytes=size - 1))


def test_headers_with_a_huge_integer_are_measured() -> None:
    headers = {"n": 10**300}
    with pytest.raises(MalformedMessage, match=r"ingest\.max_header_bytes"):
        check_headers(headers, IngestConfig(max_header_bytes=256))
