"""Schema validation with jsonschema-rs agrees with jsonschema (fmn_core.messages).

fmn validates bus messages with jsonschema-rs because it is ~10x faster; these
tests hold it to jsonschema's answers, the reference fedora-messaging uses:
on every corpus message, on mutations of each that break or keep its schema,
and on the schema features the installed schema packages use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import jsonschema_rs
import pika
import pytest
from fedora_messaging import message as fm_message

from fmn_core import messages
from fmn_core.errors import MalformedMessage
from fmn_core.messages import load_message, prepare_validators

Message = fm_message.Message


def _reference(schema: dict[str, Any]) -> Any:
    return jsonschema.validators.validator_for(schema)(schema)


def _mutations(value: Any, depth: int = 0) -> Iterator[Any]:
    """``value`` itself, then copies with a key dropped or replaced by each JSON type."""
    yield value
    if isinstance(value, dict) and depth < 2:
        for key in list(value)[:6]:
            dropped = dict(value)
            del dropped[key]
            yield dropped
            replacement: Any
            for replacement in (None, 1, 1.5, "x", [], {}, True, [1, "a"]):
                changed = dict(value)
                changed[key] = replacement
                yield changed
            for inner in list(_mutations(value[key], depth + 1))[1:10]:
                changed = dict(value)
                changed[key] = inner
                yield changed
    if depth == 0:
        yield []
        yield "a string"
        yield None


def _all_classes() -> list[type[Message]]:
    fm_message.load_message_classes()
    return sorted({Message, *fm_message._schema_name_to_class.values()}, key=repr)


def test_every_installed_schema_compiles_with_jsonschema_rs() -> None:
    # A fallback to jsonschema is allowed, but none is needed for Fedora's schemas today:
    # if one appears, the benchmark figures no longer hold for its messages.
    for cls in _all_classes():
        for schema in (cls.headers_schema, cls.body_schema):
            jsonschema_rs.validator_for(schema, validate_formats=False)


def test_prepare_validators_builds_every_class() -> None:
    assert prepare_validators() == len(_all_classes())


def test_jsonschema_rs_agrees_with_jsonschema_on_the_corpus_and_its_mutations(
    corpus: list[str],
) -> None:
    checked = disagreements = 0
    shown: list[str] = []
    for line in corpus:
        message = load_message(json.loads(line))
        cls = type(message)
        fast = messages._validators(cls)
        pairs = (
            (cls.headers_schema, fast[0], message._headers),
            (cls.body_schema, fast[2], message.body),
            (Message.body_schema, fast[3], message.body),
        )
        for schema, validator, value in pairs:
            reference = _reference(schema)
            for candidate in _mutations(value):
                checked += 1
                expected = reference.is_valid(candidate)
                if validator.is_valid(candidate) != expected:
                    disagreements += 1
                    if len(shown) < 3:
                        shown.append(
                            f"{cls.__name__}: jsonschema says {expected} for {str(candidate)[:120]}"
                        )
    assert checked > 50_000
    assert disagreements == 0, shown


#: Schema features the installed schema packages use (draft 4 and 2019-09), each
#: with values that pass and fail it; both validators must give the same answers.
FEATURES: list[tuple[dict[str, Any], list[Any]]] = [
    (
        {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
        [{"a": "x"}, {"a": 1}, {}, {"a": None}, []],
    ),
    ({"type": ["string", "null"]}, ["x", None, 1, True]),
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1"]),
    ({"type": "number"}, [1, 1.5, True, "1"]),
    ({"oneOf": [{"type": "string"}, {"type": "null"}]}, ["x", None, 1]),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, ["x", 1, None]),
    ({"enum": ["open", "closed"]}, ["open", "x", None]),
    ({"type": "array", "items": {"type": "string"}}, [["a"], ["a", 1], [], "a"]),
    (
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "array",
            "items": [{"type": "string"}, {"type": "integer"}],
        },
        [["a", 1], [1, "a"], ["a"], ["a", 1, None]],
    ),
    (
        {
            "definitions": {"u": {"type": "object", "required": ["name"]}},
            "type": "object",
            "properties": {"user": {"$ref": "#/definitions/u"}},
        },
        [{"user": {"name": "x"}}, {"user": {}}, {}],
    ),
    (
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "id": "http://fedoraproject.org/x",
            "type": "object",
            "properties": {"when": {"type": "string", "format": "date-time"}},
        },
        [{"when": "2020-01-01T00:00:00Z"}, {"when": "not a date"}, {"when": 1}],
    ),
    (
        {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "$id": "urn:x",
            "$defs": {"n": {"type": "integer", "minimum": 0}},
            "type": "object",
            "properties": {"n": {"$ref": "#/$defs/n"}},
            "additionalProperties": False,
        },
        [{"n": 1}, {"n": -1}, {"m": 1}, {}],
    ),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, [{"a": 1}, {"a": "x"}, {}]),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}, ["abc", "ABC", "abcdef"]),
    ({"not": {"type": "null"}}, [None, 1]),
    (
        {"type": "object", "minProperties": 1, "patternProperties": {"^x": {"type": "integer"}}},
        [{"x1": 1}, {"x1": "a"}, {}],
    ),
]


@pytest.mark.parametrize(("schema", "values"), FEATURES)
def test_jsonschema_rs_agrees_on_the_schema_features_fedora_uses(
    schema: dict[str, Any], values: list[Any]
) -> None:
    fast = messages._fast_validator(schema)
    reference = _reference(schema)
    assert [fast.is_valid(v) for v in values] == [reference.is_valid(v) for v in values]
    assert any(reference.is_valid(v) for v in values)
    assert not all(reference.is_valid(v) for v in values)


def test_a_schema_jsonschema_rs_cannot_compile_falls_back_to_jsonschema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("unsupported keyword")

    monkeypatch.setattr(jsonschema_rs, "validator_for", refuse)
    validator = messages._fast_validator({"type": "object", "required": ["a"]})
    assert isinstance(validator, jsonschema.protocols.Validator)
    assert validator.is_valid({"a": 1})
    assert not validator.is_valid({})


def test_a_message_that_does_not_fit_its_schema_is_still_refused_with_the_reason() -> None:
    # koji's build message requires "build_id" among others; an empty body fits no such schema.
    with pytest.raises(MalformedMessage, match="does not match its schema"):
        load_message(
            {
                "id": "x",
                "topic": "org.fedoraproject.prod.buildsys.build.state.change",
                "headers": {
                    "fedora_messaging_schema": "koji_fedoramessaging.build.BuildStateChangeV1"
                },
                "body": {"name": 1},
            }
        )


def test_a_schema_that_is_not_json_schema_is_refused_with_jsonschemas_reason() -> None:
    class Broken(Message):
        body_schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": 12}

    with pytest.raises(jsonschema.exceptions.SchemaError, match="12"):
        messages._validators(Broken)
    assert Broken not in messages._VALIDATORS


def test_each_check_is_made_once_and_none_is_dropped() -> None:
    """Duplicate schemas run once; the base headers schema still binds a class with its own."""

    class OwnHeaders(Message):
        headers_schema = {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {"x-own": {"type": "string"}},
        }
        body_schema = {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "required": ["n"],
        }

    def build(cls: type[Message], headers: dict[str, Any], body: dict[str, Any]) -> Message:
        return cls(body=body, properties=pika.BasicProperties(headers=headers))

    assert len(messages._checks(Message)) == 2  # same headers schema, body already an object
    assert len(messages._checks(OwnHeaders)) == 3
    good = build(OwnHeaders, {"fedora_messaging_severity": 20, "x-own": "a"}, {"n": 1})
    assert messages._is_valid(good)
    for headers, body in (
        ({"fedora_messaging_severity": 99}, {"n": 1}),  # the base headers schema
        ({"x-own": 5}, {"n": 1}),  # the class's own headers schema
        ({}, {"m": 1}),  # the class's body schema
    ):
        assert not messages._is_valid(build(OwnHeaders, headers, body))
    assert messages._is_valid(build(Message, {"fedora_messaging_severity": 20}, {}))
    assert not messages._is_valid(build(Message, {"fedora_messaging_severity": 99}, {}))
