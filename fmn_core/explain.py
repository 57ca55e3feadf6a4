"""Why did (or didn't) a user get a message: one engine for the CLI, the bot and the TUI.

:func:`explain` answers, per delivery context, what became of one stored message
for one user. Whether a notification was made is the outbox's answer (a row for
the message, the user and the context); what the user's filters say about the
message is the matcher's: the user's preferences are compiled by a
:class:`~fmn_core.matcher.Matcher` exactly as the daemon compiles them, and
:meth:`~fmn_core.matcher.Matcher.explain` reports, filter by filter, the verdict
of the very evaluation ``recipients`` runs, and rule by rule what held, up to the
first rule that did not. There is no second implementation of a rule here.

Outcomes (``ContextExplanation.outcome``), first of these that applies:

- a row exists: ``notified`` (sent, or on its way), ``muted`` / ``held`` (waiting
  for the mute to end, a digest, quiet hours, a rate limit), ``no-destination``
  (no confirmed address), ``context-off`` (turned off before it went), ``dead``
  (gave up after N tries, with the last error);
- no row: ``context-off`` (off, never set up, or not offered), ``unknown-schema``
  (nothing matched, and the message's schema is not installed here, so its
  packages and users could not be read), ``no-match``.

A user only ever explains their own preferences; admins may name another account.

The message's topic, summary and facts come from the bus: an explanation carries
them as every display of a message does (``fmn_core.display``), on one line without
control characters and cut at ``SUMMARY_MAX_CHARS``, so the bot, the TUI and the
operator's terminal show them as they are.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from .access import Actor, target_account
from .accounts import directory_of
from .config import CONTEXTS
from .db import catalog_of, config_of
from .delivery_policy import DISABLED_ERROR, NO_ADDRESS_ERROR
from .destinations import mask_address
from .display import SUMMARY_MAX_CHARS
from .errors import InvalidArgument, NotFound, UnknownRule
from .matcher import (
    FilterOutcome,
    Matcher,
    RuleOutcome,
)
from .messages import MessageFacts
from .models import (
    Destination,
    Notification,
    NotificationState,
    Preference,
    StoredMessage,
    User,
    utcnow,
)
from .ownership import OwnershipQueries
from .rules import Catalog, RuleSpec
from .snapshots import load_snapshots
from .stored_messages import stored_facts
from .text import has_control, one_line

__all__ = [
    "OUTCOMES",
    "ContextExplanation",
    "Explanation",
    "FilterExplanation",
    "RuleExplanation",
    "explain",
    "message_id_of",
]

#: Every ``outcome`` an explanation may give.
OUTCOMES = (
    "notified",
    "no-match",
    "context-off",
    "muted",
    "no-destination",
    "held",
    "dead",
    "unknown-schema",
)
#: The longest message id fmn stores (``messages.id``).
MAX_MESSAGE_ID = 255
#: The schema name of a message whose schema package is not installed here.
UNKNOWN_SCHEMA = "base.message"


@dataclass(frozen=True)
class RuleExplanation:
    """One rule of a filter for one message."""

    number: int
    rule: str
    args: Mapping[str, Any]
    negated: bool
    #: Whether it held (``not`` applied); None when it was not evaluated.
    holds: bool | None
    #: The rule as the user wrote it: ``not package_involved package=foo``.
    text: str
    #: The message's facts this rule looks at: ``packages: kernel, glibc``.
    facts: str
    #: ``raised`` (a rule that fails counts as not holding), ``expired``, or "".
    note: str = ""


@dataclass(frozen=True)
class FilterExplanation:
    """One filter for one message."""

    name: str
    position: int
    active: bool
    matched: bool
    #: Why the matcher does not evaluate it at all, or "" (see ``fmn_core.matcher``).
    skipped: str
    rules: tuple[RuleExplanation, ...]


@dataclass(frozen=True)
class ContextExplanation:
    """What became of the message in one delivery context, and why."""

    context: str
    outcome: str
    #: The filter that matched when the message arrived (the outbox row's), or None.
    filter: str | None
    filters: tuple[FilterExplanation, ...]
    #: The outbox row's state (pending, sending, sent, failed, dead), if there is one.
    state: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    #: The context's confirmed destinations, masked.
    destinations: tuple[str, ...] = ()
    #: A filter matching now that did not when the message arrived (or the reverse).
    changed_since: str | None = None


@dataclass(frozen=True)
class Explanation:
    """One message for one user, context by context."""

    user: str
    message_id: str
    topic: str
    summary: str
    #: Whether the message's schema is installed here (its packages, users were read).
    schema_known: bool
    facts: Mapping[str, tuple[str, ...]]
    contexts: tuple[ContextExplanation, ...]

    def as_json(self) -> dict[str, Any]:
        """The object ``fmn-daemon explain --json`` prints (issue 14's shape)."""
        return {
            "user": self.user,
            "message_id": self.message_id,
            "topic": self.topic,
            "contexts": [
                {
                    "context": c.context,
                    "outcome": c.outcome,
                    "filter": c.filter,
                    "filters": [
                        {
                            "name": f.name,
                            "active": f.active,
                            "matched": f.matched,
                            "rules": [
                                {
                                    "rule": r.rule,
                                    "args": dict(r.args),
                                    "negated": r.negated,
                                    "holds": r.holds,
                                }
                                for r in f.rules
                            ],
                        }
                        for f in c.filters
                    ],
                }
                for c in self.contexts
            ],
        }


def message_id_of(text: str) -> str:
    """The message id in what a user pasted: an id, or a datagrepper link to one.

    Datagrepper links carry the id as ``?id=`` (``/datagrepper/id?id=…``,
    ``/datagrepper/v2/id?id=…``) or as the last path segment.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("Give a message id, or a datagrepper link to the message.")
    given = text.strip()
    if given.startswith(("http://", "https://")):
        parts = urlsplit(given)
        ids = parse_qs(parts.query).get("id") or parse_qs(parts.query).get("msg_id")
        found = ids[0].strip() if ids else parts.path.rstrip("/").rpartition("/")[2]
        if not found or found in ("id", "raw", "datagrepper"):
            raise InvalidArgument(
                "That link names no message: a datagrepper link to one message ends in "
                "?id=<message id>.",
                argument="message",
            )
        given = found
    if len(given) > MAX_MESSAGE_ID or has_control(given) or any(ch.isspace() for ch in given):
        raise InvalidArgument(
            f"{given[:40]!r} is not a message id (at most {MAX_MESSAGE_ID} characters, no spaces).",
            argument="message",
        )
    return given


_FACT_OF_KEY = {
    "package": "packages",
    "app": "application",
    "username": "users",
    "agent": "agent",
    "topic": "topic",
    "group": "groups",
}
_FACT_OF_PARAMETER = {
    "package": "packages",
    "packages": "packages",
    "app": "application",
    "username": "users",
    "user": "users",
    "group": "groups",
    "container": "containers",
    "module": "modules",
    "flatpak": "flatpaks",
    "severity": "severity",
    "text": "summary",
    "words": "summary",
}


def _shown(text: str) -> str:
    """A value from the message, as an explanation shows it (see the module docstring)."""
    return one_line(text, limit=SUMMARY_MAX_CHARS)


def _shown_all(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(_shown(value) for value in values))


def _facts_table(facts: MessageFacts | None, topic: str) -> dict[str, tuple[str, ...]]:
    if facts is None:
        return {"topic": (_shown(topic),)}
    return {
        "topic": (_shown(facts.topic),),
        "application": (_shown(facts.app_name),) if facts.app_name else (),
        "agent": (_shown(facts.agent_name),) if facts.agent_name else (),
        "users": _shown_all(facts.usernames),
        "packages": _shown_all(facts.packages),
        "groups": _shown_all(facts.groups),
        "containers": _shown_all(facts.containers),
        "modules": _shown_all(facts.modules),
        "flatpaks": _shown_all(facts.flatpaks),
        "severity": (str(facts.severity),),
        "summary": (_shown(facts.summary),) if facts.summary else (),
    }


def _relevant(spec: RuleSpec | None, table: Mapping[str, tuple[str, ...]]) -> str:
    """The message's facts a rule looks at, as ``packages: kernel, glibc``."""
    fact = "topic"
    if spec is not None:
        if spec.hint is not None and spec.hint.key in _FACT_OF_KEY:
            fact = _FACT_OF_KEY[spec.hint.key]
        else:
            fact = next(
                (
                    _FACT_OF_PARAMETER[p.name]
                    for p in spec.parameters
                    if p.name in _FACT_OF_PARAMETER
                ),
                "topic",
            )
    values = table.get(fact, ())
    shown = ", ".join(values[:8]) + (f" (+{len(values) - 8} more)" if len(values) > 8 else "")
    return f"{fact}: {shown or 'none'}"


def _describe(name: str, arguments: Mapping[str, Any], negated: bool) -> str:
    args = " ".join(f"{k}={v}" for k, v in sorted(arguments.items()))
    return " ".join(part for part in ("not" if negated else "", name, args) if part)


def _rule(
    number: int, outcome: RuleOutcome, catalog: Catalog, table: Mapping[str, tuple[str, ...]]
) -> RuleExplanation:
    try:
        spec: RuleSpec | None = catalog.get(outcome.name)
    except UnknownRule:
        spec = None
    note = "raised" if outcome.raised else "expired" if outcome.expired else ""
    if spec is None:
        note = note or "not-installed"
    return RuleExplanation(
        number,
        outcome.name,
        dict(outcome.arguments),
        outcome.negated,
        outcome.holds,
        _describe(outcome.name, outcome.arguments, outcome.negated),
        _relevant(spec, table),
        note,
    )


def _filter(
    outcome: FilterOutcome, catalog: Catalog, table: Mapping[str, tuple[str, ...]]
) -> FilterExplanation:
    return FilterExplanation(
        outcome.name,
        outcome.position,
        outcome.active,
        outcome.matched,
        outcome.skipped,
        tuple(_rule(n, r, catalog, table) for n, r in enumerate(outcome.rules, start=1)),
    )


def _row_outcome(row: Notification, user: User, confirmed: bool, now: dt.datetime) -> str:
    """The outcome an outbox row tells (see the module docstring)."""
    error = row.last_error or ""
    if row.state == NotificationState.SENT.value:
        return "notified"
    if row.state == NotificationState.DEAD.value:
        if error == DISABLED_ERROR:
            return "context-off"
        if error == NO_ADDRESS_ERROR:
            return "no-destination"
        return "dead"
    # Waiting (pending, failed, sending): why, as the sender noted it.
    if error.startswith("held: the user muted") or (
        user.muted_until is not None and user.muted_until > now
    ):
        return "muted"
    if error.startswith("held"):
        return "held"
    if error == NO_ADDRESS_ERROR or not confirmed:
        return "no-destination"
    return "notified"


def _no_row_outcome(
    context: str,
    preference: Preference | None,
    offered: Sequence[str],
    matched_now: str | None,
    schema_known: bool,
) -> str:
    if context not in offered or preference is None or not preference.enabled:
        return "context-off"
    if matched_now is None and not schema_known:
        return "unknown-schema"
    return "no-match"


def explain(
    session: Session, actor: Actor, message: str, *, user: str | None = None
) -> Explanation:
    """What became of a stored message for the actor (or, for an admin, ``user``).

    ``message`` is a message id or a datagrepper link to one. ``NotFound`` when
    fmn has not stored that message (it only explains messages it received).
    """
    target = target_account(actor, user)
    message_id = message_id_of(message)
    row = session.get(StoredMessage, message_id)
    config = config_of(session)
    if row is None:
        days = config.retention.days
        kept = f"; messages older than {days} days are pruned" if days else ""
        raise NotFound(
            f"fmn has no message {message_id[:80]!r}: it explains only messages it received "
            f"(check the id{kept})."
        )
    offered = tuple(config.contexts)
    catalog = catalog_of(session)
    facts = stored_facts(row)
    schema_known = facts is not None and facts.schema != UNKNOWN_SCHEMA
    table = _facts_table(facts, row.topic)
    account = session.scalars(select(User).where(User.name == target)).one_or_none()

    outcomes: list[FilterOutcome] = []
    first: dict[str, str] = {}
    if account is not None and facts is not None:
        snapshots = load_snapshots(session, [account.id])
        matcher = Matcher.from_snapshots(
            snapshots,
            catalog,
            # One user and one message ask about a few owners and packages: read
            # those, not the whole table.
            OwnershipQueries(session),
            offered,
            directory_of(session),
        )
        outcomes = [o for snapshot in snapshots for o in matcher.explain(facts, snapshot)]
        first = {c: r.filter_name for c, r in matcher.first_matches(facts, account.id).items()}

    rows: dict[str, Notification] = {}
    preferences: dict[str, Preference] = {}
    confirmed: dict[str, list[str]] = {}
    if account is not None:
        rows = {
            n.context: n
            for n in session.scalars(
                select(Notification).where(
                    Notification.message_id == message_id, Notification.user_id == account.id
                )
            )
        }
        preferences = {
            p.context: p
            for p in session.scalars(select(Preference).where(Preference.user_id == account.id))
        }
        for context, address in session.execute(
            select(Preference.context, Destination.address)
            .join(Destination, Destination.preference_id == Preference.id)
            .where(Preference.user_id == account.id, Destination.confirmed.is_(True))
            .order_by(Destination.id)
        ):
            confirmed.setdefault(context, []).append(mask_address(context, address))

    now = utcnow()
    contexts = [c for c in CONTEXTS if c in offered or c in preferences or c in rows]
    contexts += [c for c in offered if c not in contexts]
    explained: list[ContextExplanation] = []
    for context in contexts:
        filters = tuple(_filter(o, catalog, table) for o in outcomes if o.context == context)
        notification = rows.get(context)
        matched_now = first.get(context)
        if notification is not None:
            assert account is not None
            outcome = _row_outcome(notification, account, bool(confirmed.get(context)), now)
            changed = None
            if matched_now != notification.filter_name:
                changed = f"now {matched_now!r}" if matched_now is not None else "now no filter"
            explained.append(
                ContextExplanation(
                    context,
                    outcome,
                    notification.filter_name,
                    filters,
                    notification.state,
                    notification.attempts,
                    notification.last_error,
                    notification.created_at,
                    notification.sent_at,
                    tuple(confirmed.get(context, ())),
                    changed,
                )
            )
            continue
        outcome = _no_row_outcome(
            context, preferences.get(context), offered, matched_now, schema_known
        )
        explained.append(
            ContextExplanation(
                context,
                outcome,
                None,
                filters,
                destinations=tuple(confirmed.get(context, ())),
                changed_since=(
                    f"now {matched_now!r}"
                    if matched_now is not None and outcome == "no-match"
                    else None
                ),
            )
        )
    return Explanation(
        target,
        message_id,
        _shown(row.topic),
        _shown((facts.summary if facts is not None else "") or row.summary or ""),
        schema_known,
        table,
        tuple(explained),
    )
