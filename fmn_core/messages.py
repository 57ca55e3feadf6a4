"""Reading bus messages: decoding, finding their schema, and the facts rules use.

fedora-messaging re-checks a schema against the JSON-Schema metaschema on every
``validate()``; fmn builds one validator per schema class and reuses it, with
jsonschema-rs (compiled, ~10x faster than jsonschema here, and in agreement with
it on every corpus message) and jsonschema for any schema jsonschema-rs cannot
compile. jsonschema still explains a refusal. Messages without a ``fedora_messaging_schema``
header (archives, fixtures) get their class from the topic: the registered
classes whose topic the message's topic ends with, first one that validates.

Bus input is hostile until proven otherwise, so it is bounded before it is parsed
(``ingest.*`` in the configuration): the size of a body or a line, and how deeply
its JSON nests — counted over the raw text without recursion (``fmn_core.bounds.json_depth``),
because Python's own decoder and encoder recurse and a body nested 10,000 levels
deep would otherwise raise ``RecursionError`` wherever it is touched next.
"""

from __future__ import annotations

import dis
import json
import logging
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol, cast

import jsonschema
import jsonschema_rs
import orjson
import pika
from fedora_messaging import message as fm_message

from .bounds import json_depth
from .config import IngestConfig
from .errors import MalformedMessage

__all__ = [
    "SEVERITY_LEVELS",
    "MessageFacts",
    "bare_properties",
    "check_headers",
    "check_json_text",
    "facts_of",
    "finite_float",
    "load_message",
    "loads_bounded",
    "loads_strict",
    "may_hold_lone_surrogates",
    "message_of",
    "parse_line",
    "prepare_validators",
    "refuse_constant",
    "replace_lone_surrogates",
    "schema_class_for",
    "value_depth",
]

log = logging.getLogger(__name__)

#: fedora-messaging's severities, by name.
SEVERITY_LEVELS: dict[str, int] = {
    "DEBUG": fm_message.DEBUG,
    "INFO": fm_message.INFO,
    "WARNING": fm_message.WARNING,
    "ERROR": fm_message.ERROR,
}

Message = fm_message.Message


#: Schema class -> its checked validators. A plain dict: two threads racing on a
#: new class only build the same validators twice.
_VALIDATORS: dict[type[Message], tuple[_Validator, ...]] = {}
#: Schema class -> jsonschema's validators, built only to explain a refusal.
_EXPLAINERS: dict[type[Message], tuple[Any, ...]] = {}


class _Validator(Protocol):
    def is_valid(self, instance: Any) -> bool: ...


def _schemas(cls: type[Message]) -> tuple[dict[str, Any], ...]:
    return (cls.headers_schema, Message.headers_schema, cls.body_schema, Message.body_schema)


def _fast_validator(schema: dict[str, Any]) -> _Validator:
    """jsonschema-rs's validator for ``schema``; jsonschema's where it can't compile it.

    Formats are not checked, as jsonschema does not check them without a format
    checker (fedora-messaging passes none): both then accept the same messages,
    which ``tests/core/test_messages.py`` checks over the corpus and mutations of it.
    """
    try:
        return cast(_Validator, jsonschema_rs.validator_for(schema, validate_formats=False))
    except Exception:  # a schema feature jsonschema-rs does not compile: the reference one
        log.info("schema %s: checked with jsonschema", schema.get("id") or schema.get("$id"))
        return cast(_Validator, _reference_validator(schema))


def _reference_validator(schema: dict[str, Any]) -> Any:
    validator_cls = jsonschema.validators.validator_for(schema)
    return validator_cls(schema)


def _validators(cls: type[Message]) -> tuple[_Validator, ...]:
    """One checked validator per schema, built once (the expensive part)."""
    cached = _VALIDATORS.get(cls)
    if cached is not None:
        return cached
    built = []
    for schema in _schemas(cls):
        # A schema that is not itself valid JSON Schema could accept anything:
        # checked against its metaschema by jsonschema-rs (~1 ms for all of
        # Fedora's), and by jsonschema, which raises the detailed error, if not.
        try:
            checked = bool(jsonschema_rs.meta.is_valid(schema))
        except Exception:  # a draft jsonschema-rs does not know: the reference decides
            checked = False
        if not checked:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        built.append(_fast_validator(schema))
    _VALIDATORS[cls] = tuple(built)
    return _VALIDATORS[cls]


def prepare_validators() -> int:
    """Build every registered schema class's validators now, not on a first message.

    The consumer calls it while it starts, so no delivery waits for a schema to
    be compiled. Returns how many classes are ready; a class whose schema is
    broken is left for ``load_message`` to refuse its messages.
    """
    fm_message.load_message_classes()
    ready = 0
    classes: set[type[Message]] = {Message, *fm_message._schema_name_to_class.values()}
    for cls in classes:
        try:
            _validators(cls)
        except Exception:  # its messages are refused, with the reason, when they come
            log.warning("schema class %s: its schema cannot be compiled", cls, exc_info=True)
            continue
        ready += 1
    return ready


#: Schema class -> the validators ``_is_valid`` runs: (validator, whether it checks headers).
_CHECKS: dict[type[Message], tuple[tuple[_Validator, bool], ...]] = {}

#: Keywords that say nothing about an instance.
_ANNOTATIONS = frozenset(("$schema", "$id", "id", "title", "description"))


def _checks(cls: type[Message]) -> tuple[tuple[_Validator, bool], ...]:
    """``_validators(cls)`` without the checks another one already makes.

    A schema class that keeps the base class's headers schema (all of Fedora's
    do) would check the same headers against the same schema twice; the base
    body schema only says "an object", which ``load_message`` has checked
    before any schema runs.
    """
    cached = _CHECKS.get(cls)
    if cached is not None:
        return cached
    headers_validator, base_headers, body_validator, base_body = _validators(cls)
    checks = [(headers_validator, True)]
    if cls.headers_schema != Message.headers_schema:
        checks.append((base_headers, True))
    checks.append((body_validator, False))
    implied = {k: v for k, v in Message.body_schema.items() if k not in _ANNOTATIONS}
    if cls.body_schema != Message.body_schema and implied != {"type": "object"}:
        checks.append((base_body, False))
    _CHECKS[cls] = tuple(checks)
    return _CHECKS[cls]


def _headers_of(message: Message) -> dict[str, Any]:
    """``message._headers``, without the ``typing.Union`` that property builds on every read."""
    headers: dict[str, Any] | None = message._properties.headers
    return headers if headers else {}


def _is_valid(message: Message) -> bool:
    headers, body = _headers_of(message), message.body
    for validator, on_headers in _checks(type(message)):
        if not validator.is_valid(headers if on_headers else body):
            return False
    return True


def _validation_error(message: Message) -> str:
    cls = type(message)
    explainers = _EXPLAINERS.get(cls)
    if explainers is None:
        explainers = _EXPLAINERS[cls] = tuple(_reference_validator(s) for s in _schemas(cls))
    for validator, value in zip(
        explainers,
        (message._headers, message._headers, message.body, message.body),
        strict=True,
    ):
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            return f"{where}: {error.message[:200]}"
    return "invalid"


@cache
def _topic_index() -> dict[str, tuple[type[Message], ...]]:
    fm_message.load_message_classes()
    index: dict[str, list[type[Message]]] = {}
    for cls in fm_message._schema_name_to_class.values():
        topic = getattr(cls, "topic", "")
        if topic and isinstance(topic, str):
            index.setdefault(topic, []).append(cls)
    return {topic: tuple(classes) for topic, classes in index.items()}


def schema_class_for(headers: Mapping[str, Any]) -> type[Message]:
    """The class the schema header names, else ``Message`` (then the topic decides)."""
    name = headers.get("fedora_messaging_schema")
    if isinstance(name, str):
        fm_message.load_message_classes() if not fm_message._registry_loaded else None
        cls = fm_message._schema_name_to_class.get(name)
        if cls is not None:
            return cls
    return Message


def _classes_for_topic(topic: str) -> tuple[type[Message], ...]:
    index = _topic_index()
    parts = topic.split(".")
    for start in range(len(parts)):
        candidates = index.get(".".join(parts[start:]))
        if candidates:
            return candidates
    return ()


def load_message(data: Mapping[str, Any]) -> Message:
    """Build a validated message from its serialized form (``fedora_messaging.message.dumps``).

    Raises ``MalformedMessage`` naming what is wrong.
    """
    if not isinstance(data, Mapping):
        raise MalformedMessage("a message must be a JSON object")
    message_id = data.get("id") if isinstance(data.get("id"), str) else None
    headers = data.get("headers") or {}
    topic, body = data.get("topic"), data.get("body")
    if isinstance(topic, str) and topic and isinstance(body, dict) and isinstance(headers, dict):
        headers = dict(headers)  # the message's own: the caller's data is not touched
    queue = data.get("queue")
    return message_of(topic, body, headers, message_id, queue if isinstance(queue, str) else None)


def message_of(
    topic: object,
    body: object,
    headers: object,
    message_id: str | None,
    queue: str | None = None,
) -> Message:
    """``load_message`` of a message's parts; ``headers`` becomes the message's own.

    A delivery's parts come here without a serialized form built around them
    (and copied again) first.
    """
    if not isinstance(topic, str) or not topic:
        raise MalformedMessage("the message has no topic", message_id=message_id)
    if not isinstance(body, dict):
        raise MalformedMessage("the message body is not a JSON object", message_id=message_id)
    if not isinstance(headers, dict):
        raise MalformedMessage("the message headers are not a JSON object", message_id=message_id)
    severity = headers.get("fedora_messaging_severity")
    cls = schema_class_for(headers)
    guessed = cls is Message and "fedora_messaging_schema" not in headers
    candidates: tuple[type[Message], ...] = (
        (*_classes_for_topic(topic), Message) if guessed else (cls,)
    )
    # Prebuilt properties skip fedora-messaging's filter headers, which call
    # every schema property (and log when one raises) before validation. The
    # candidates only read them: one set serves them all.
    properties = bare_properties(
        {"content_encoding": "utf-8", "headers": headers, "message_id": message_id}
    )
    chosen: Message | None = None
    for candidate in candidates:
        try:
            built = candidate(
                body=body,
                topic=topic,
                properties=properties,
                severity=severity if isinstance(severity, int) else None,
            )
            valid = _is_valid(built)
        except Exception as exc:  # a schema class choking on this body
            if not guessed:
                raise MalformedMessage(
                    f"the message cannot be read as "
                    f"{headers.get('fedora_messaging_schema')}: {exc}",
                    message_id=message_id,
                ) from exc
            continue
        if valid:
            chosen = built
            break
        if not guessed:
            raise MalformedMessage(
                f"the message does not match its schema {headers.get('fedora_messaging_schema')}: "
                f"{_validation_error(built)}",
                message_id=message_id,
            )
    if chosen is None:  # pragma: no cover - the base class accepts any object body
        raise MalformedMessage("the message matches no schema", message_id=message_id)
    chosen.queue = queue
    return chosen


_BASIC_PROPERTIES = pika.BasicProperties
#: Every attribute ``pika.BasicProperties()`` sets, unset, in the order it sets them.
_UNSET_PROPERTIES: dict[str, Any] = dict.fromkeys(vars(pika.BasicProperties()))


def bare_properties(fields: dict[str, Any]) -> pika.BasicProperties:
    """``pika.BasicProperties(**fields)``: the same object with the same attributes in
    the same order, without the constructor's fourteen keyword arguments (built once
    per delivery, by the frame reader and by ``message_of``)."""
    properties: pika.BasicProperties = _BASIC_PROPERTIES.__new__(_BASIC_PROPERTIES)
    properties.__dict__ = {**_UNSET_PROPERTIES, **fields}
    return properties


def refuse_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant``: ``NaN`` and ``Infinity`` are not JSON (RFC 8259).

    Python accepts them; PostgreSQL and most other readers refuse them.
    """
    raise ValueError(f"{name} is not a JSON value")


def finite_float(literal: str) -> float:
    """``json.loads``'s ``parse_float``: a number too large for a float is refused.

    Python reads ``1e400`` as infinity, which no JSON encoder can write back; the
    body would be stored as its original text but read back as something else.
    """
    value = float(literal)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{literal[:40]} is too large a number")
    return value


#: The strict reading with the standard library's decoder (built once).
_STRICT_DECODER = json.JSONDecoder(parse_constant=refuse_constant, parse_float=finite_float)

#: Bytes: every digit read as ``0``, so that a run of digits is a run of ``0``.
_DIGITS_AS_ZERO = bytes(ord("0") if ord("0") <= b <= ord("9") else b for b in range(256))
#: 19 digits in a row: an integer that may not fit in 64 bits.
_LONG_NUMBER = b"0" * 19


def loads_strict(text: str, raw: bytes | None = None) -> Any:
    """Parse JSON text strictly: ``NaN``, ``Infinity`` and numbers beyond a float are refused.

    Raises ``ValueError`` (``json.JSONDecodeError`` or ``finite_float``'s) with the
    standard library's reason. orjson parses first (about twice as fast on bus
    bodies); it refuses all of the above too, and lone surrogates, which the
    standard library accepts: whatever orjson refuses is read again by the
    standard library, which then decides, so what is accepted and the reason
    for a refusal are the standard library's. orjson reads an integer beyond 64
    bits as a float: a text with 19 digits in a row is left to the standard
    library at once. ``raw`` is the text's UTF-8 encoding, when the caller has it.
    """
    if raw is None:
        raw = text.encode("utf-8", "surrogatepass")
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _STRICT_DECODER.decode(text)


#: Bytes of a UTF-8 JSON text with every digit read as ``0`` and ``[`` as ``{``: one
#: pass gives both ``check_json_text``'s bracket count and ``loads_strict``'s screen.
_SCREEN = bytes(
    ord("0") if ord("0") <= b <= ord("9") else ord("{") if b == ord("[") else b for b in range(256)
)


def loads_bounded(text: str, raw: bytes, *, max_depth: int) -> Any:
    """``check_json_text(text, max_depth=max_depth)``, then ``loads_strict(text, raw)``.

    ``raw`` must be the text's UTF-8 encoding (a delivery's UTF-8 body): an
    ASCII byte in UTF-8 is always that character, so one C-speed pass over
    ``raw`` counts the opening brackets (what ``check_json_text`` counts in
    ``text`` with two passes) and finds runs of 19 digits (what ``loads_strict``
    looks for with a pass of its own). Same checks in the same order, same
    refusals with the same reasons.
    """
    screened = raw.translate(_SCREEN)
    if screened.count(b"{") > max_depth:
        _check_depth(raw, max_depth, "the body")
    if _LONG_NUMBER not in screened:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _STRICT_DECODER.decode(text)


def loads_json(data: str | bytes) -> Any:
    """Parse JSON that is already known to be valid (a database's ``json``/``jsonb``).

    What the standard library's ``json.loads`` returns, faster: orjson parses
    first, and whatever it refuses (an infinite float such as ``1e400``, a lone
    surrogate, nesting deeper than it goes) is read by the standard library. An
    integer of 19 digits or more goes to the standard library at once, since
    orjson reads one beyond 64 bits as a float.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


#: A ``\u`` escape of a surrogate (U+D800 to U+DFFF): the only way a UTF-8 body can
#: carry one. A pair (an emoji) or an escaped backslash before ``ud83d`` matches too;
#: the walk then finds nothing.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: The same in decoded text, or a surrogate itself (UTF-7 decodes ``+2AA-`` to one).
_SURROGATE_IN_TEXT = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")
#: A surrogate in a parsed string: a pair was read as one character, so it is lone.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def may_hold_lone_surrogates(body: str | bytes) -> bool:
    """Whether JSON text (or its UTF-8 bytes) may hold a lone surrogate: cheap, and
    ``False`` for almost every body (``replace_lone_surrogates`` then need not look).

    Most UTF-8 bodies have no backslash, and ``in`` finds a single byte with
    ``memchr``: a tenth of the time it takes to look for ``\\u`` (measured on the
    corpus).
    """
    if isinstance(body, bytes):
        return b"\\" in body and _SURROGATE_ESCAPE.search(body) is not None
    return _SURROGATE_IN_TEXT.search(body) is not None


def replace_lone_surrogates(value: Any) -> tuple[Any, int]:
    """Parsed JSON with each lone surrogate, in keys and strings, replaced by U+FFFD.

    A producer that cuts UTF-16 text can cut an emoji in half (``"fix \\ud83d"``);
    the half is shown as the replacement character, as any tool shows it. The
    stored body is then JSON every reader takes (PostgreSQL's ``jsonb`` and its
    JSON operators refuse such an escape), and nothing downstream gets text
    UTF-8 cannot carry. Returns the value and how many keys and strings
    changed. Lists and objects are changed in place, without recursion,
    however deep they nest.
    """
    if isinstance(value, str):
        fixed, count = _LONE_SURROGATE.subn("\ufffd", value)
        return fixed, int(count > 0)
    changed = 0
    pending: list[Any] = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if any(_LONE_SURROGATE.search(key) for key in node):
                # Rebuilt in place, so the parent's reference holds and keys keep their order.
                items = list(node.items())
                node.clear()
                for key, item in items:
                    fixed, count = _LONE_SURROGATE.subn("\ufffd", key)
                    if count:
                        changed += 1
                    node[fixed] = item
            for key, item in node.items():
                if isinstance(item, str):
                    fixed, count = _LONE_SURROGATE.subn("\ufffd", item)
                    if count:
                        node[key] = fixed  # a new value for a key: no resize while iterating
                        changed += 1
                elif isinstance(item, dict | list):
                    pending.append(item)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    fixed, count = _LONE_SURROGATE.subn("\ufffd", item)
                    if count:
                        node[index] = fixed
                        changed += 1
                elif isinstance(item, dict | list):
                    pending.append(item)
    return value, changed


def check_json_text(text: str, *, max_depth: int, what: str = "the body") -> None:
    """Refuse (``MalformedMessage``) JSON text nested deeper than ``max_depth``."""
    # Cheap first: fewer opening brackets than the limit can't nest past it.
    if text.count("{") + text.count("[") <= max_depth:
        return
    _check_depth(text, max_depth, what)


def _check_depth(text: str | bytes, max_depth: int, what: str) -> None:
    """``check_json_text`` past its bracket count; ``text`` may be the UTF-8 bytes (same depth)."""
    depth = json_depth(text)
    if depth > max_depth:
        raise MalformedMessage(
            f"{what} is nested {depth} levels deep; at most {max_depth} are accepted "
            "(ingest.max_depth)"
        )


def value_depth(value: Any, *, stop_after: int | None = None) -> int:
    """How deeply a decoded value nests mappings and sequences (iteratively).

    With ``stop_after``, stops counting once that depth is passed.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if stop_after is not None and deepest > stop_after:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


#: Header value types whose JSON text is at most as long as ``_flat_size_bound`` counts.
_SCALARS = frozenset((str, int, bool, float, type(None)))


def _flat_size_bound(headers: Mapping[str, Any]) -> int:
    """At least the UTF-8 length of ``json.dumps(headers, ensure_ascii=False)``.

    For a table of ``_SCALARS`` only: a character takes at most 6 bytes (4 in
    UTF-8, 6 as a ``\\u`` escape), a key or string 2 quotes more, a number at most
    24 (its ``repr``; an int so long that this could be wrong counts exactly),
    and each entry 4 bytes of separators.
    """
    total = 2
    for key, value in headers.items():
        if type(key) is not str:
            return _EXACT
        total += 6 * len(key) + 6
        if type(value) is str:
            total += 6 * len(value) + 2
        elif type(value) is int and not -(10**20) < value < 10**20:
            return _EXACT
        else:
            total += 24
    return total


#: A bound that is never small enough: the size is then measured exactly.
_EXACT = 1 << 62


def check_headers(headers: Mapping[str, Any], limits: IngestConfig, *, flat: bool = False) -> None:
    """Refuse headers nested deeper or larger than ``max_header_depth``/``max_header_bytes``.

    ``flat``: the caller has seen that every value is one of ``_SCALARS`` (a
    delivery's table, which it copies with the same test), so it is not looked
    at again.
    """
    # Bus headers are nearly always one flat table of strings and numbers: then
    # its depth is 1, and its encoded size has a bound cheaper than encoding it.
    if flat or _SCALARS.issuperset(map(type, headers.values())):
        if _flat_size_bound(headers) <= limits.max_header_bytes:
            return
        flat = True
    else:
        flat = not any(isinstance(v, Mapping | list | tuple) for v in headers.values())
    depth = 1 if flat else value_depth(headers, stop_after=limits.max_header_depth)
    if depth > limits.max_header_depth:
        raise MalformedMessage(
            f"the headers are nested more than {limits.max_header_depth} levels deep "
            "(ingest.max_header_depth)"
        )
    size = len(json.dumps(headers, default=str, ensure_ascii=False).encode("utf-8"))
    if size > limits.max_header_bytes:
        raise MalformedMessage(
            f"the headers take {size} bytes; at most {limits.max_header_bytes} are accepted "
            "(ingest.max_header_bytes)"
        )


def parse_line(line: str | bytes, limits: IngestConfig | None = None) -> Message:
    """Decode one line of a message file; ``MalformedMessage`` says why it can't.

    The line is bounded before it is parsed (``limits``, the defaults when not
    given): its size, and its depth (the body sits one level below the line's
    own object). A line must carry a string ``id``: a message without one could
    not be told from the next one without an id.
    """
    limits = limits if limits is not None else IngestConfig()
    size = len(line)
    most = limits.max_body_bytes + limits.max_header_bytes + 4096
    if size > most:
        raise MalformedMessage(f"the line is {size} long; at most {most} bytes are accepted")
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"not valid JSON: the line is not UTF-8 ({exc})") from exc
    check_json_text(text, max_depth=limits.max_depth + 1, what="the line")
    try:
        data = loads_strict(text)
    except ValueError as exc:
        raise MalformedMessage(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("a message must be a JSON object")
    if may_hold_lone_surrogates(text):
        # A replayed file or a requeued dead message reads as a delivery would.
        data, _ = replace_lone_surrogates(data)
    headers = data.get("headers")
    if isinstance(headers, dict):
        check_headers(headers, limits)
    message = load_message(data)
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise MalformedMessage('the message has no "id" (a non-empty string)')
    return message


def _safe(message: Message, attribute: str, default: Any) -> Any:
    # Schema properties are third-party code over untrusted bodies: some raise on
    # messages that validated (a pagure issue with no assignee, say).
    try:
        value = getattr(message, attribute)
    except Exception:  # any failure means "no value" for matching
        log.debug("message %s: property %s raised", message.id, attribute, exc_info=True)
        return default
    return default if value is None else value


_NO_STRINGS: frozenset[str] = frozenset()


def _strings(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset((value,))
    if type(value) in (list, tuple) and not value:  # most properties of most messages
        return _NO_STRINGS
    try:
        return frozenset(v for v in value if isinstance(v, str))
    except TypeError:
        return frozenset()


@dataclass(slots=True)
class MessageFacts:
    """What rules look at, computed once per message through the schema properties."""

    id: str
    topic: str
    app_name: str
    agent_name: str | None
    usernames: frozenset[str]
    packages: frozenset[str]
    groups: frozenset[str]
    containers: frozenset[str]
    modules: frozenset[str]
    flatpaks: frozenset[str]
    severity: int
    summary: str
    url: str | None
    body: Any
    headers: Mapping[str, Any]
    schema: str
    message: Message | None = field(default=None, repr=False)
    #: The body as the JSON text it arrived in, when known: stored as is, not re-encoded.
    body_json: str | None = field(default=None, repr=False)

    @property
    def index_keys(self) -> dict[str, Collection[str]]:
        """The keys the matcher's index looks filters up by.

        Built for every message the matcher sees: the single values go as tuples,
        which cost half of what frozensets of one did (0.37 against 0.73 µs).
        """
        app = self.app_name
        agent = self.agent_name
        return {
            "app": (app.lower(),) if app else (),
            "topic": (self.topic,),
            "username": self.usernames,
            "agent": (agent,) if agent else (),
            "package": self.packages,
            "group": self.groups,
        }


#: First labels of the reversed-domain topic prefixes: ``<domain>.<env>.<app>.…``.
_DOMAIN_ROOTS = frozenset(("org", "io", "com", "net"))


def _app_from_topic(topic: str) -> str:
    # Messages bridged from a STOMP broker keep its "/topic/" prefix, and UMB
    # topics read "VirtualTopic.<env>.<app>.…".
    topic = topic.removeprefix("/topic/")
    parts = topic.split(".")
    if parts[0] == "VirtualTopic" and len(parts) > 2:
        return parts[2]
    # org.fedoraproject.prod.<app>.…, io.pagure.prod.pagure.…, org.release-monitoring.prod.anitya.…
    if len(parts) > 3 and parts[0] in _DOMAIN_ROOTS:
        return parts[3]
    return parts[0]


#: dist-git namespaces, and the fact each one's repositories belong to.
_DISTGIT_NAMESPACES = {
    "rpms": "packages",
    "container": "containers",
    "modules": "modules",
    "flatpaks": "flatpaks",
}


def _distgit_artifact(topic: str, body: Any) -> tuple[str, str] | None:
    """The dist-git repository a src.fedoraproject.org message is about, as (fact, name).

    pagure's schemas have no ``packages``, so without this a pull request on
    rpms/kernel would not be "about kernel" and package rules would miss it.
    Only Fedora's own topics count: pagure.io publishes under ``io.pagure.*``.
    """
    if not (topic.startswith("org.fedoraproject.") and ".pagure." in topic):
        return None
    if not isinstance(body, dict):
        return None
    pull_request = body.get("pullrequest")
    candidates = (
        pull_request.get("project") if isinstance(pull_request, dict) else None,
        body.get("project"),
        body.get("repo"),
    )
    for project in candidates:
        if not isinstance(project, dict):
            continue
        namespace = project.get("namespace")
        fact = _DISTGIT_NAMESPACES.get(namespace) if isinstance(namespace, str) else None
        name = project.get("name")
        if fact is not None and isinstance(name, str) and name:
            return fact, name
    return None


_NONE_WORD = re.compile(r"\bNone\b")


def _readable_summary(summary: object, message: Message) -> str:
    """The schema's summary, unless it was built from fields the message lacks.

    A schema formats its summary from body fields; a message without them reads
    ``None-None-None was tagged into None by None``. Such a summary (``None`` in
    it where the body has no ``None``) is dropped: the caller falls back to the
    topic, which at least says what happened.
    """
    text = str(summary) if summary else ""
    # The word search only where the word can be (a C substring test first).
    if (
        "None" in text
        and _NONE_WORD.search(text)
        and "None" not in json.dumps(message.body, default=str)
    ):
        return ""
    return text


#: The fact properties whose getter in fedora-messaging's base class returns a
#: constant: ``None``, or a new empty list (the link too: ``url``).
_FACT_PROPERTIES = (
    "url",
    "app_name",
    "agent_name",
    "usernames",
    "groups",
    "packages",
    "containers",
    "modules",
    "flatpaks",
)


def _returns_constant(prop: object) -> bool:
    """Whether a property's getter is ``return None`` or ``return []`` and nothing else."""
    fget = getattr(prop, "fget", None)
    if fget is None or not hasattr(fget, "__code__"):
        return False
    ops = [
        (i.opname, i.argval)
        for i in dis.get_instructions(fget)
        if i.opname not in ("RESUME", "NOP", "CACHE")
    ]
    return ops in (
        [("LOAD_CONST", None), ("RETURN_VALUE", None)],
        [("RETURN_CONST", None)],
        [("BUILD_LIST", 0), ("RETURN_VALUE", None)],
    )


_BASE_CONSTANT = frozenset(
    name for name in _FACT_PROPERTIES if _returns_constant(getattr(Message, name, None))
)
_INHERITED: dict[type[Message], frozenset[str]] = {}


def _inherited_constants(cls: type[Message]) -> frozenset[str]:
    """The fact properties ``cls`` inherits unchanged from the base class's constant ones.

    Reading them gives ``None`` or ``[]`` whatever the message: ``facts_of``
    takes that answer without the call (most bus messages have a schema class
    that overrides a few of them, or none).
    """
    known = _INHERITED.get(cls)
    if known is None:
        plain = cls.__getattribute__ is Message.__getattribute__
        known = _INHERITED[cls] = frozenset(
            name
            for name in _BASE_CONSTANT
            if plain and getattr(cls, name, None) is getattr(Message, name)
        )
    return known


def facts_of(message: Message, *, body_json: str | None = None) -> MessageFacts:
    """Compute a message's facts; never raises, whatever the schema properties do.

    ``body_json`` is the JSON text ``message.body`` was parsed from, if the caller
    has it (a delivery's body): it is kept so that storing needs no new encoding.
    """
    cls = type(message)
    inherited = _INHERITED.get(cls)
    if inherited is None:
        inherited = _inherited_constants(cls)
    topic, body = message.topic, message.body
    app = (None if "app_name" in inherited else _safe(message, "app_name", None)) or (
        _app_from_topic(topic)
    )
    agent = None if "agent_name" in inherited else _safe(message, "agent_name", None)
    summary = _readable_summary(_safe(message, "summary", ""), message)
    url = None if "url" in inherited else _safe(message, "url", None)
    severity = getattr(message, "severity", fm_message.INFO)
    schema_name = fm_message._class_to_schema_name.get(cls, "base.message")
    # Written out rather than looped over: most messages inherit every one of them.
    packages = _NO_STRINGS if "packages" in inherited else _strings(_safe(message, "packages", ()))
    containers = (
        _NO_STRINGS if "containers" in inherited else _strings(_safe(message, "containers", ()))
    )
    modules = _NO_STRINGS if "modules" in inherited else _strings(_safe(message, "modules", ()))
    flatpaks = _NO_STRINGS if "flatpaks" in inherited else _strings(_safe(message, "flatpaks", ()))
    distgit = _distgit_artifact(topic, body)
    if distgit is not None:
        fact, name = distgit
        if fact == "packages":
            packages = packages | {name}
        elif fact == "containers":
            containers = containers | {name}
        elif fact == "modules":
            modules = modules | {name}
        else:
            flatpaks = flatpaks | {name}
    return MessageFacts(
        id=str(message.id),
        topic=topic,
        app_name=str(app),
        agent_name=agent if isinstance(agent, str) and agent else None,
        usernames=(
            _NO_STRINGS if "usernames" in inherited else _strings(_safe(message, "usernames", ()))
        ),
        packages=packages,
        groups=_NO_STRINGS if "groups" in inherited else _strings(_safe(message, "groups", ())),
        containers=containers,
        modules=modules,
        flatpaks=flatpaks,
        severity=severity if isinstance(severity, int) else fm_message.INFO,
        summary=str(summary) if summary else "",
        url=url if isinstance(url, str) else None,
        body=body,
        # The message's own table (nothing writes to either).
        headers=_headers_of(message),
        schema=schema_name,
        message=message,
        body_json=body_json,
    )
