"""The ingest pipeline: store a batch of bus messages, match them, write the outbox.

Everything here runs inside the caller's transaction and never commits: the
consumer commits and only then acks, ``fmn-daemon replay`` commits per batch.
Per batch there is a fixed number of statements, not one per message:

1. one ``INSERT … ON CONFLICT (id) DO NOTHING RETURNING id`` for the messages; a
   message that was already stored (a redelivery after a crash between commit
   and ack) gets no outbox rows, its rows exist already;
2. one query for the state of the filters that matched (so a filter deleted or
   switched off since the matcher last refreshed, or a one-shot filter, is seen);
   the messages are matched before they are stored, so on PostgreSQL this query
   goes to the database with step 1, in one round trip;
3. one plain ``INSERT`` for the outbox rows (all for messages stored by step 1,
   so none can exist already), with (PostgreSQL) a ``NOTIFY`` in the same statement
   so that listening senders claim them as soon as the caller commits
   (``fmn_core.outbox.announce_new_rows``).

Muted users still get their rows; the sender holds them back until the mute ends.
A one-shot filter that matched is switched off (plus a ``ChangeEvent`` so every
other process's matcher refreshes its user), and this process's matcher
refreshes that user at once, so later messages of the same batch don't match it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, MutableSet, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson
import pika
from fedora_messaging import message as fm_message
from sqlalchemy import Table, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from fmn_core.config import IngestConfig
from fmn_core.db import run_all_on_driver, run_on_driver
from fmn_core.display import display_fields
from fmn_core.errors import ConfigError, MalformedMessage
from fmn_core.matcher import Matcher, Recipient
from fmn_core.messages import (
    MessageFacts,
    check_headers,
    check_json_text,
    facts_of,
    loads_bounded,
    loads_strict,
    may_hold_lone_surrogates,
    message_of,
    replace_lone_surrogates,
)
from fmn_core.models import (
    ChangeEvent,
    Filter,
    Notification,
    NotificationState,
    Preference,
    StoredMessage,
    utcnow,
)
from fmn_core.outbox import ANNOUNCE_SQL, NEW_ROWS_CHANNEL, announce_new_rows
from fmn_core.ownership import affects_ownership
from fmn_core.text import for_log

from .metrics import Metrics

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_TOPIC_LENGTH",
    "IngestResult",
    "JsonText",
    "MatchedBatch",
    "decode_delivery",
    "ingest_batch",
    "json_safe",
    "match_batch",
    "read_delivery",
    "store_batch",
]

log = logging.getLogger(__name__)

#: The widths of ``messages.id`` and ``messages.topic``; longer values are malformed.
MAX_ID_LENGTH = 255
MAX_TOPIC_LENGTH = 512

#: Value types ``json_safe`` passes through unchanged.
_PLAIN = frozenset((str, int, bool, float, type(None)))
_STRINGS = frozenset((str,))

_MESSAGES: Table = StoredMessage.__table__  # type: ignore[assignment]
_NOTIFICATIONS: Table = Notification.__table__  # type: ignore[assignment]


@dataclass
class IngestResult:
    """What one batch did."""

    #: Messages handed in.
    received: int = 0
    #: Newly stored (and matched) messages.
    stored: int = 0
    #: Messages that were already stored (redeliveries): they get no outbox rows again.
    duplicates: int = 0
    #: ``(message id, reason)`` of messages refused before storing.
    malformed: list[tuple[str, str]] = field(default_factory=list)
    #: Stored messages with at least one recipient.
    matched: int = 0
    #: Outbox rows written.
    notifications: int = 0
    #: One-shot filters switched off by this batch.
    oneshots_fired: list[int] = field(default_factory=list)
    #: Whether a message in the batch changes package ownership (refresh it).
    ownership_changed: bool = False
    #: Recipients of each newly stored message, by message id.
    recipients: dict[str, list[Recipient]] = field(default_factory=dict)


def json_safe(value: Any) -> Any:
    """A JSON-serializable copy of AMQP header values (bytes, datetimes, decimals…)."""
    if type(value) is dict and _PLAIN.issuperset(map(type, value.values())):
        # The usual headers: one table of strings, numbers and booleans, whose
        # keys are all strings already (copied in C; ``str(k)`` is ``k``).
        if _STRINGS.issuperset(map(type, value)):
            return dict(value)
        return {str(k): v for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def decode_delivery(
    routing_key: str,
    properties: pika.BasicProperties,
    body: bytes,
    limits: IngestConfig | None = None,
) -> fm_message.Message:
    """Turn one AMQP delivery into a validated message, or raise ``MalformedMessage``.

    The AMQP ``message_id`` property is the message's id; the routing key is its
    topic; the body is JSON in the declared content encoding (UTF-8 by default).
    ``limits`` (the defaults when not given) bound the body's size and depth and
    the headers' size and depth, all checked before anything is parsed.
    """
    return read_delivery(routing_key, properties, body, limits)[0]


def read_delivery(
    routing_key: str,
    properties: pika.BasicProperties,
    body: bytes,
    limits: IngestConfig | None = None,
) -> tuple[fm_message.Message, str]:
    """``decode_delivery``, plus the body's JSON text (decoded, bounded and parsed).

    The text is what the message's body was parsed from, so it is valid JSON
    (without ``NaN`` or numbers beyond a float) and can be stored as it is;
    unless the body held lone surrogates (``replace_lone_surrogates``): the text
    is then the cleaned body's.
    """
    limits = limits if limits is not None else IngestConfig()
    message_id = properties.message_id if isinstance(properties.message_id, str) else None
    if not message_id:
        raise MalformedMessage("the delivery has no message_id property")
    if len(body) > limits.max_body_bytes:
        raise MalformedMessage(
            f"the body is {len(body)} bytes long; at most {limits.max_body_bytes} are "
            "accepted (ingest.max_body_bytes)",
            message_id=message_id,
        )
    raw_headers = properties.headers or {}
    if not isinstance(raw_headers, Mapping):
        raise MalformedMessage("the headers are not a table", message_id=message_id)
    # The usual table: string keys, values that JSON writes as they are. Seen
    # once here, for the size check and for the message's own copy below.
    flat = (
        type(raw_headers) is dict
        and _PLAIN.issuperset(map(type, raw_headers.values()))
        and _STRINGS.issuperset(map(type, raw_headers))
    )
    try:
        check_headers(raw_headers, limits, flat=flat)
    except MalformedMessage as exc:
        raise MalformedMessage(str(exc), message_id=message_id) from None
    encoding = properties.content_encoding or "utf-8"
    try:
        text = body.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        raise MalformedMessage(
            f"the body cannot be decoded as {encoding}: {exc}", message_id=message_id
        ) from exc
    try:
        # A UTF-8 body that decoded is already the text's UTF-8 encoding.
        if encoding == "utf-8" or encoding.lower().replace("-", "").replace("_", "") == "utf8":
            data = loads_bounded(text, body, max_depth=limits.max_depth)
            suspect = may_hold_lone_surrogates(body)
        else:
            check_json_text(text, max_depth=limits.max_depth)
            data = loads_strict(text)
            suspect = may_hold_lone_surrogates(text)
    except MalformedMessage as exc:
        raise MalformedMessage(str(exc), message_id=message_id) from None
    except ValueError as exc:
        raise MalformedMessage(f"the body is not JSON: {exc}", message_id=message_id) from exc
    if suspect:
        data, changed = replace_lone_surrogates(data)
        if changed:
            log.debug(
                "message %s: %d text(s) with a lone surrogate, read with U+FFFD",
                for_log(message_id),
                changed,
            )
            # What is stored must be what was read: the cleaned body, written again.
            text = json.dumps(data, ensure_ascii=False)
    # A new table (``json_safe``'s copy of a flat one): it becomes the message's
    # own, uncopied.
    headers = dict(raw_headers) if flat else json_safe(raw_headers)
    return message_of(routing_key, data, headers, message_id), text


def _message_row(facts: MessageFacts, postgres: bool) -> dict[str, Any]:
    """A stored message's columns (``received_at`` aside, the same for a whole batch)."""
    # What feeds and the live feed show, so they never load the body.
    summary, url, app = display_fields(facts)
    body_json = facts.body_json
    headers = facts.headers
    return {
        "id": facts.id,
        "topic": facts.topic,
        # SQLite's JSON column encodes values itself; PostgreSQL's takes the text.
        "body": JsonText(body_json) if postgres and body_json is not None else facts.body,
        "headers": headers if type(headers) is dict else dict(headers),
        "summary": summary,
        "url": url,
        "app": app,
    }


def _refusal(facts: MessageFacts) -> str | None:
    if not facts.id:
        return "the message has no id"
    if len(facts.id) > MAX_ID_LENGTH:
        return f"the message id is longer than {MAX_ID_LENGTH} characters"
    if len(facts.topic) > MAX_TOPIC_LENGTH:
        return f"the topic is longer than {MAX_TOPIC_LENGTH} characters"
    # PostgreSQL text cannot hold NUL; refused here rather than by a failed batch.
    if "\x00" in facts.id:
        return "the message id contains a NUL character"
    if "\x00" in facts.topic:
        return "the topic contains a NUL character"
    return None


@dataclass(frozen=True, slots=True)
class JsonText:
    """A value already encoded as JSON text, for a PostgreSQL ``json`` column.

    A delivery's body arrives as JSON text, and PostgreSQL's ``json`` type
    keeps its input text: storing that text spares encoding the parsed body
    again, and the stored body is the body as it was received.
    """

    text: str


#: Column types for the PostgreSQL bulk inserts, by table.
_PG_TYPES: dict[str, dict[str, str]] = {
    "messages": {
        "id": "text",
        "topic": "text",
        "body": "json",
        "headers": "json",
        "received_at": "timestamptz",
        "summary": "text",
        "url": "text",
        "app": "text",
    },
    "notifications": {
        "message_id": "text",
        "user_id": "integer",
        "context": "text",
        "filter_id": "integer",
        "filter_name": "text",
        "state": "text",
        "attempts": "integer",
        "next_attempt_at": "timestamptz",
        "created_at": "timestamptz",
    },
}


def _insert_new(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    conflict: Sequence[str],
    constants: Mapping[str, Any] | None = None,
) -> list[Any]:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING <primary key>`` for many rows.

    ``constants`` are columns whose value is the same in every row (not repeated
    in ``rows``). Returns the primary keys of the rows actually inserted. SQLite
    gets one multi-row ``VALUES`` statement. On PostgreSQL such a statement
    (thousands of placeholders, a new text for every batch size) costs the
    driver more time to parse than the database takes to run it; instead the
    rows travel one column at a time through ``unnest`` and the constants as
    scalars: one statement whose text never changes (psycopg prepares it), one
    round trip. A column is one text that the database splits
    (``_joined_columns``), or, when a value holds a separator, an array in
    PostgreSQL's binary format: text in an array literal would need every quote
    and backslash of every JSON body escaped, in Python; in binary each element
    is just its length and bytes. JSON columns travel as text and are cast row
    by row.
    """
    key = next(iter(table.primary_key.columns))
    constants = constants or {}
    if _dialect(session) == "sqlite":
        if constants:
            rows = [{**row, **constants} for row in rows]
        insert = (
            sqlite.insert(table)
            .on_conflict_do_nothing(index_elements=list(conflict))
            .returning(key)
        )
        return list(session.execute(insert, rows).scalars())
    statement_text, params = _pg_insert_new(table, rows, conflict, constants)
    return [row[0] for row in run_on_driver(session, statement_text, params)]


def _pg_insert_new(
    table: Table,
    rows: list[dict[str, Any]],
    conflict: Sequence[str],
    constants: Mapping[str, Any],
) -> tuple[str, list[Any]]:
    """``_insert_new``'s PostgreSQL statement and its parameters (it returns the keys)."""
    key = next(iter(table.primary_key.columns))
    statement_text, params = _pg_insert(table, rows, constants)
    statement_text += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING RETURNING {key.name}"
    return statement_text, params


def _insert_all(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    constants: Mapping[str, Any],
    *,
    announce: bool = False,
) -> None:
    """A plain ``INSERT`` of rows that cannot conflict with any stored row, as ``_insert_new``.

    Without ``ON CONFLICT`` PostgreSQL neither probes the unique index before
    each row nor inserts it speculatively (a WAL record less), and without
    ``RETURNING`` nothing comes back: about a tenth of an outbox row's cost to
    the database. A conflict is an error that fails the transaction.

    ``announce``: also ``announce_new_rows`` in the same transaction. On
    PostgreSQL its ``pg_notify`` rides in the insert's own statement (a
    data-modifying ``WITH`` runs whether or not it is read): at a steady rate
    most batches are a message or two, and a round trip of their own cost the
    writer about as much CPU as the insert.
    """
    if _dialect(session) == "sqlite":
        session.execute(sqlite.insert(table), [{**row, **constants} for row in rows])
        if announce:
            announce_new_rows(session)
        return
    statement_text, params = _pg_insert(table, rows, constants)
    if announce:
        statement_text = f"WITH inserted AS ({statement_text}) {ANNOUNCE_SQL}"
        params.append(NEW_ROWS_CHANNEL)
    run_on_driver(session, statement_text, params)


def _dialect(session: Session) -> str:
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ConfigError(
            "database_url", f"fmn stores messages on SQLite or PostgreSQL, not {dialect}"
        )
    return dialect


def _pg_insert(
    table: Table, rows: list[dict[str, Any]], constants: Mapping[str, Any]
) -> tuple[str, list[Any]]:
    """PostgreSQL's ``INSERT … SELECT … FROM unnest(…)`` of ``rows``, and its parameters.

    A single row (at a steady rate most batches are one message) comes from
    ``VALUES`` with one scalar per column instead: psycopg looks up a dumper for
    each array (scanning it for its element type) and dumps it element by
    element, which for one row cost more than the row itself. Either text never
    changes for a table and its constants, so each is prepared once.
    """
    types = _PG_TYPES[table.name]
    columns = list(types)
    varying = [c for c in columns if c not in constants]
    picked = ", ".join(
        f"%b::{types[c]}" if c in constants else f"u.{c}::{types[c]}" for c in columns
    )
    # JSON columns travel as text and are cast in ``picked``.
    sent = {c: "text" if types[c] == "json" else types[c] for c in varying}
    values = [
        [_json_value(row[c]) for row in rows] if types[c] == "json" else [row[c] for row in rows]
        for c in varying
    ]
    joined = None
    if len(rows) == 1:
        source = f"(VALUES ({', '.join(f'%b::{sent[c]}' for c in varying)}))"
    elif (joined := _joined_columns(values, [types[c] == "json" for c in varying])) is not None:
        source = f"unnest({', '.join(_SPLIT.format(sent[c]) for c in varying)})"
    else:
        source = f"unnest({', '.join(f'%b::{sent[c]}[]' for c in varying)})"
    statement_text = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {picked} FROM {source} AS u({', '.join(varying)})"
    )
    params: list[Any] = [constants[c] for c in columns if c in constants]
    if joined is not None:
        params += joined
    elif len(rows) == 1:
        params += [column[0] for column in values]
    else:
        params += values
    return statement_text, params


#: A column's values sent as one text (``_joined_columns``): split on the unit
#: separator, with the record separator standing alone for NULL, then cast.
_SEPARATOR = "\x1f"
_NULL = "\x1e"
_SPLIT = "string_to_array(%b::text, E'\\x1f', E'\\x1e')::{}[]"


def _joined_columns(columns: list[list[Any]], json: list[bool]) -> list[str] | None:
    """Each column's values as one text for ``_SPLIT``; ``None`` where that can't be exact.

    psycopg dumps an array element by element in Python (its length, then its
    bytes); one text per column is one join in C, and PostgreSQL splits it. A
    JSON text never holds a control character unescaped, so a JSON column (a
    body as received and parsed, headers as encoded) is joined without a look;
    any other column is joined only when it holds neither control character
    (the separators counted in the result prove it). Either kind is joined only
    when its values are all strings or all integers, NULLs aside. Otherwise the
    caller sends arrays, as it did for every batch before; the two give the
    same rows (``tests/daemon/test_ingest.py``).
    """
    joined: list[str] = []
    for column, is_json in zip(columns, json, strict=True):
        nulls = column.count(None)
        kinds = set(map(type, column)) - {type(None)}
        if kinds == {int}:
            # An integer out of the column's range fails its cast, as in an array.
            items = [_NULL if v is None else str(v) for v in column]
        elif kinds <= {str}:
            items = [_NULL if v is None else v for v in column] if nulls else column
        else:
            return None
        text = _SEPARATOR.join(items)
        if not is_json and (text.count(_SEPARATOR) != len(items) - 1 or text.count(_NULL) != nulls):
            return None
        joined.append(text)
    return joined


#: Value types orjson writes as the standard library does (floats aside: ``NaN``).
_ORJSON_SAFE = frozenset((str, int, bool, type(None)))


def _json_value(value: Any) -> str:
    if isinstance(value, JsonText):
        return value.text
    if type(value) is dict and _ORJSON_SAFE.issuperset(map(type, value.values())):
        # Usual headers: orjson writes them in C. What it refuses (a key that
        # is not a string, an integer beyond 64 bits, a lone surrogate) is left
        # to the standard library, which encoded every value before.
        try:
            return orjson.dumps(value).decode("utf-8")
        except orjson.JSONEncodeError:
            pass
    return json.dumps(value)


def _safe_recipients(matcher: Matcher, facts: MessageFacts) -> list[Recipient]:
    # The matcher already turns a rule's failure into its filter's miss; this
    # guard is for a bug in the matcher itself: one message must not stop the rest.
    try:
        return matcher.recipients(facts)
    except Exception:
        log.exception(
            "message %s: matching failed; it is stored without recipients", for_log(facts.id)
        )
        return []


@dataclass(frozen=True, slots=True)
class _FilterState:
    user_id: int
    active: bool
    oneshot: bool


#: ``_filter_states``'s query on PostgreSQL (``Filter`` joined to its ``Preference``).
_PG_FILTER_STATES = (
    "SELECT f.id, f.active, f.oneshot, p.user_id FROM filters AS f "
    "JOIN preferences AS p ON p.id = f.preference_id WHERE f.id = ANY(%b::integer[])"
)


def _filter_states(session: Session, ids: Iterable[int], known: dict[int, _FilterState]) -> None:
    """Load the state of the filters in ``ids`` not in ``known`` yet (usually one query)."""
    missing = sorted(set(ids) - known.keys())
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres and missing:
        # One array parameter, whatever the count: one statement text, prepared once.
        _note_states(run_on_driver(session, _PG_FILTER_STATES, [missing]), known)
        return
    step = 500
    for start in range(0, len(missing), step):
        chunk = missing[start : start + step]
        # SQLite has no arrays, and a limit on parameters.
        rows = session.execute(
            select(Filter.id, Filter.active, Filter.oneshot, Preference.user_id)
            .join(Preference, Preference.id == Filter.preference_id)
            .where(Filter.id.in_(chunk))
        )
        for row in rows:
            known[row.id] = _FilterState(row.user_id, bool(row.active), bool(row.oneshot))


def _note_states(rows: Iterable[tuple[Any, ...]], known: dict[int, _FilterState]) -> None:
    """``_PG_FILTER_STATES``'s rows into ``known``."""
    for filter_id, active, oneshot, user_id in rows:
        known[filter_id] = _FilterState(user_id, bool(active), bool(oneshot))


def _affects_ownership(facts: MessageFacts) -> bool:
    try:
        return bool(affects_ownership(facts))
    except Exception:
        log.warning(
            "message %s: cannot tell whether it changes ownership",
            for_log(facts.id),
            exc_info=True,
        )
        return False


@dataclass(slots=True)
class MatchedBatch:
    """A batch matched and not yet stored (``match_batch``), for ``store_batch``."""

    #: What the batch did so far: received, refused, duplicates within it.
    result: IngestResult
    #: The messages to store, in order, each id once.
    facts: list[MessageFacts]
    #: The matcher's recipients of each of ``facts``.
    candidates: list[list[Recipient]]


def ingest_batch(
    session: Session,
    matcher: Matcher,
    messages: Sequence[fm_message.Message | MessageFacts],
    metrics: Metrics | None = None,
    *,
    refreshed: MutableSet[int] | None = None,
) -> IngestResult:
    """Store, match and write the outbox rows for a batch, in the caller's transaction.

    ``refreshed`` collects the users whose matcher entries this call refreshed
    from uncommitted state (one-shot filters switched off): if the caller's
    transaction rolls back, it must refresh them again from the database.
    Counters in ``metrics`` are added when the batch has been written (a batch
    whose commit then fails and is retried counts twice).
    """
    matched = match_batch(matcher, messages)
    return store_batch(session, matcher, matched, metrics, refreshed=refreshed)


def match_batch(
    matcher: Matcher,
    messages: Sequence[fm_message.Message | MessageFacts],
) -> MatchedBatch:
    """Refuse what cannot be stored, follow Fedora Accounts' changes, match the rest.

    No database is read: a batch can be matched before its transaction begins.
    """
    result = IngestResult(received=len(messages))
    facts_list: list[MessageFacts] = []
    seen: set[str] = set()
    for item in messages:
        facts = item if isinstance(item, MessageFacts) else facts_of(item)
        reason = _refusal(facts)
        if reason is not None:
            log.warning("message %s: dropped: %s", for_log(facts.id) or "(none)", reason)
            result.malformed.append((facts.id[:MAX_ID_LENGTH], reason))
            continue
        if facts.id in seen:  # the same id twice in one batch: store and match it once
            result.duplicates += 1
            continue
        seen.add(facts.id)
        facts_list.append(facts)

    # Fedora Accounts' messages change who is in which group: apply them first
    # (identity). Every message is matched before it is stored, so that on
    # PostgreSQL the messages' insert and the query for the matched filters'
    # state travel together. A redelivered message (already stored, its outbox
    # rows written when it was) is matched for nothing and its matches dropped;
    # its Fedora Accounts change, applied again, makes this process ask the
    # directory again, as the first delivery did.
    matcher.follow_directory(facts_list)
    candidates = [_safe_recipients(matcher, f) for f in facts_list]
    return MatchedBatch(result, facts_list, candidates)


def store_batch(
    session: Session,
    matcher: Matcher,
    matched: MatchedBatch,
    metrics: Metrics | None = None,
    *,
    refreshed: MutableSet[int] | None = None,
    matcher_lock: AbstractContextManager[object] | None = None,
) -> IngestResult:
    """Store a matched batch and write its outbox rows, in the caller's transaction.

    The matcher is used again only for a filter changed since the batch was
    matched, or a one-shot filter that fires; ``matcher_lock`` is then held, so
    that another thread may match the next batch meanwhile.
    """
    result, facts_list, candidates = matched.result, matched.facts, matched.candidates
    states: dict[int, _FilterState] = {}
    new_ids = _store_messages(session, facts_list, candidates, states)
    fresh: list[MessageFacts] = []
    matches: list[list[Recipient]] = []
    for facts, recipients in zip(facts_list, candidates, strict=True):
        if facts.id in new_ids:
            fresh.append(facts)
            matches.append(recipients)
    result.duplicates += len(facts_list) - len(fresh)
    result.stored = len(fresh)
    matches = _check_filters(
        session, matcher, fresh, matches, result, refreshed, states, matcher_lock
    )

    now = utcnow()
    outbox: list[dict[str, Any]] = []
    for facts, recipients in zip(fresh, matches, strict=True):
        if len(recipients) > 1 and len({(r.user_id, r.context) for r in recipients}) < len(
            recipients
        ):
            # The matcher names each (user, context) once; should it ever not,
            # the first stays, as an ``ON CONFLICT DO NOTHING`` kept it.
            kept: dict[tuple[int, str], Recipient] = {}
            for r in recipients:
                kept.setdefault((r.user_id, r.context), r)
            recipients = list(kept.values())
        result.recipients[facts.id] = recipients
        if recipients:
            result.matched += 1
        for r in recipients:
            outbox.append(
                {
                    "message_id": facts.id,
                    "user_id": r.user_id,
                    "context": r.context,
                    "filter_id": r.filter_id,
                    "filter_name": r.filter_name,
                }
            )
    if outbox:
        constants = {
            "state": NotificationState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        # Every row is for a message this transaction has just stored, one per
        # (user, context): none can exist already (the unique constraint still
        # guards it), so they go in without ``ON CONFLICT``.
        # Senders listening for new rows claim them at the commit, not at their next poll.
        _insert_all(session, _NOTIFICATIONS, outbox, constants, announce=True)
        result.notifications = len(outbox)

    result.ownership_changed = any(_affects_ownership(f) for f in fresh)
    if metrics is not None:
        without_schema = sum(1 for f in fresh if f.schema == "base.message")
        metrics.inc("messages_matched", result.matched)
        metrics.inc("messages_without_schema", without_schema)
        metrics.inc("messages_malformed", len(result.malformed))
        metrics.inc("notifications_created", result.notifications)
    return result


def _store_messages(
    session: Session,
    facts_list: list[MessageFacts],
    matches: list[list[Recipient]],
    states: dict[int, _FilterState],
) -> set[str]:
    """Store the messages not stored yet (their ids) and read the matched filters' state.

    The state of every filter in ``matches`` goes into ``states``. On PostgreSQL
    the insert and the query go to the database together, in one round trip:
    the writer waits for each trip, and then for the interpreter lock its other
    thread holds while it decodes the next batch.
    """
    if not facts_list:
        return set()
    postgres = _dialect(session) == "postgresql"
    rows = [_message_row(f, postgres) for f in facts_list]
    constants = {"received_at": utcnow()}
    filter_ids = sorted({r.filter_id for rs in matches for r in rs})
    if not postgres or not filter_ids:
        new_ids = set(_insert_new(session, _MESSAGES, rows, ["id"], constants))
        _filter_states(session, filter_ids, states)
        return new_ids
    inserted, found = run_all_on_driver(
        session,
        [
            _pg_insert_new(_MESSAGES, rows, ["id"], constants),
            (_PG_FILTER_STATES, [filter_ids]),
        ],
    )
    _note_states(found, states)
    return {row[0] for row in inserted}


def _check_filters(
    session: Session,
    matcher: Matcher,
    fresh: list[MessageFacts],
    matches: list[list[Recipient]],
    result: IngestResult,
    refreshed: MutableSet[int] | None,
    states: dict[int, _FilterState],
    matcher_lock: AbstractContextManager[object] | None = None,
) -> list[list[Recipient]]:
    """Hold the matches against the filters' committed state; fire one-shot filters.

    ``states`` holds the state of every filter in ``matches`` that exists (read
    with the messages' insert). The matcher lags the database by up to a second:
    a filter may have been removed or switched off meanwhile. Those users are
    refreshed and their messages matched again. Then, in message order, the
    first message a one-shot filter matches switches it off, and later messages
    are matched without it. The matcher is used only then, with ``matcher_lock``
    held; the common case (every matched filter active, none one-shot) needs
    neither.
    """
    if all(
        (state := states.get(r.filter_id)) is not None and state.active and not state.oneshot
        for rs in matches
        for r in rs
    ):
        return matches
    with matcher_lock if matcher_lock is not None else nullcontext():
        stale = {
            r.user_id
            for rs in matches
            for r in rs
            if r.filter_id not in states or not states[r.filter_id].active
        }
        if stale:
            log.info(
                "refreshing %d user(s) whose filters changed since the matcher loaded", len(stale)
            )
            matcher.refresh_users(session, stale)
            for i, (facts, rs) in enumerate(zip(fresh, matches, strict=True)):
                if any(r.user_id in stale for r in rs):
                    matches[i] = _safe_recipients(matcher, facts)
            _filter_states(session, (r.filter_id for rs in matches for r in rs), states)

        def usable(r: Recipient) -> bool:
            state = states.get(r.filter_id)
            return state is not None and state.active

        if not any(states[r.filter_id].oneshot for rs in matches for r in rs if usable(r)):
            return [[r for r in rs if usable(r)] for rs in matches]

        fired_users: set[int] = set()
        checked: list[list[Recipient]] = []
        for facts, rs in zip(fresh, matches, strict=True):
            if fired_users & {r.user_id for r in rs}:
                rs = _safe_recipients(matcher, facts)
                _filter_states(session, (r.filter_id for r in rs), states)
            rs = [r for r in rs if usable(r)]
            firing = sorted({r.filter_id for r in rs if states[r.filter_id].oneshot})
            if firing:
                # Only a filter still active is switched off here: another writer, or
                # another process, may have fired it first (this statement waits for
                # that transaction, then finds it inactive). That one notified; this
                # message gets nothing through it.
                fired = sorted(
                    session.scalars(
                        update(Filter)
                        .where(Filter.id.in_(firing), Filter.active.is_(True))
                        .values(active=False)
                        .returning(Filter.id)
                    )
                )
                if len(fired) < len(firing):
                    rs = [r for r in rs if r.filter_id in fired or r.filter_id not in firing]
                users = {states[f].user_id for f in firing}
                session.add_all(
                    ChangeEvent(user_id=u, kind="oneshot_fired")
                    for u in sorted({states[f].user_id for f in fired})
                )
                session.flush()
                for f in firing:
                    states[f] = _FilterState(states[f].user_id, False, True)
                for f in fired:
                    log.info(
                        "message %s: one-shot filter %d fired and is now inactive",
                        for_log(facts.id),
                        f,
                    )
                result.oneshots_fired.extend(fired)
                fired_users |= users
                if refreshed is not None:
                    refreshed |= users
                matcher.refresh_users(session, users)
            checked.append(rs)
        return checked
