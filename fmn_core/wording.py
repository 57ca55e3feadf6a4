"""How fmn words its views for people: one phrasing, used by the bot and the TUI.

The bot and the TUI show the same facts (how many filters a context has, its
digest policy); they say them in the same words by asking this module, so a
phrase is changed in one place. Front ends add their own layout (a table cell,
an IRC line), never their own wording of these facts.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .explain import ContextExplanation, Explanation, FilterExplanation, RuleExplanation

__all__ = [
    "SKIPPED",
    "DigestPolicy",
    "count",
    "digest_policy",
    "explanation_lines",
    "filter_verdict",
    "quiet_hours",
    "waiting_reason",
]


def count(number: int, noun: str, plural: str | None = None) -> str:
    """A number of things as people read it: ``no filters``, ``1 filter``, ``3 filters``.

    ``plural`` is for nouns that don't take an ``s`` (``count(2, "address", "addresses")``).
    """
    many = plural if plural is not None else f"{noun}s"
    if number == 0:
        return f"no {many}"
    return f"1 {noun}" if number == 1 else f"{number} {many}"


class DigestPolicy(Protocol):
    """What :func:`digest_policy` reads: a ``ContextView`` has both."""

    @property
    def digest_minutes(self) -> int: ...

    @property
    def digest_count(self) -> int: ...

    @property
    def digest_at(self) -> str | None: ...

    @property
    def digest_timezone(self) -> str: ...


def digest_policy(view: DigestPolicy, *, compact: bool = False) -> str:
    """When a context's digest goes out: ``every 60 minutes or after 10 notifications``,
    ``every 60 minutes``, ``after 10 notifications``, ``daily at 08:00 Europe/Prague``,
    or ``off``.

    ``compact`` is the same policy for a table cell: ``60m or 10``, ``every 60m``,
    ``after 10``, ``08:00 Europe/Prague``, ``off``.
    """
    minutes, notifications = view.digest_minutes, view.digest_count
    at = view.digest_at
    if compact:
        if minutes and notifications and at is None:
            return f"{minutes}m or {notifications}"
        parts = [f"every {minutes}m"] if minutes else []
        parts += [f"after {notifications}"] if notifications else []
        parts += [f"{at} {view.digest_timezone}"] if at is not None else []
    else:
        parts = [f"every {count(minutes, 'minute')}"] if minutes else []
        parts += [f"after {count(notifications, 'notification')}"] if notifications else []
        parts += [f"daily at {at} {view.digest_timezone}"] if at is not None else []
    return " or ".join(parts) if parts else "off"


# --- explanations ("why did or didn't I get this?") -----------------------------------

#: Why the matcher does not look at a filter (``FilterExplanation.skipped``).
SKIPPED = {
    "context-off": "its context is off",
    "context-not-offered": "its context is not offered here",
    "inactive": "it is switched off",
    "paused": "it is paused",
    "no-rules": "it has no rules (a filter without rules matches nothing)",
    "broken-rule": "one of its rules is not installed or its arguments are no longer valid",
}


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return "not yet"
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def _context_outcome(item: ContextExplanation) -> str:
    """One context's outcome as a sentence (without the filter details)."""
    where = ", ".join(item.destinations) or "no confirmed address"
    outcome = item.outcome
    if outcome == "notified":
        if item.state == "sent":
            return f"notified by filter {item.filter!r}: sent {_when(item.sent_at)} to {where}."
        return (
            f"notified by filter {item.filter!r}: {item.state} since "
            f"{_when(item.created_at)}, to {where}"
            + (f" (last try: {item.last_error})" if item.last_error else "")
            + "."
        )
    if outcome == "muted":
        # The sender's note reads "held: the user muted fmn until <time> UTC".
        until = (item.last_error or "").partition(" until ")[2]
        return f"matched filter {item.filter!r}, held back: you muted fmn" + (
            f" until {until}." if until else "."
        )
    if outcome == "held":
        why = item.last_error or "held for a digest"
        return f"matched filter {item.filter!r}, {why}."
    if outcome == "no-destination":
        return (
            f"matched filter {item.filter!r}, but there is no confirmed address for "
            f"{item.context}; confirm one to receive these."
        )
    if outcome == "dead":
        return (
            f"matched filter {item.filter!r}, gave up after {count(item.attempts, 'try', 'tries')}"
            f" (last error: {item.last_error or 'none recorded'})."
        )
    if outcome == "context-off":
        if item.filter is not None:
            return f"matched filter {item.filter!r}, but {item.context} was turned off."
        return f"{item.context} is turned off: nothing is sent there."
    if outcome == "unknown-schema":
        return (
            "no filter matched; this message's schema is not installed here, so its "
            "application, users and packages could not be read."
        )
    return "no filter matched."


def _rule_line(rule: RuleExplanation) -> str:
    if rule.note == "expired":
        return f"rule {rule.number} `{rule.text}` has expired (ignored)"
    if rule.note == "not-installed":
        return f"rule {rule.number} `{rule.text}` is not installed here"
    if rule.note == "raised":
        return f"rule {rule.number} `{rule.text}` failed on this message (counts as not holding)"
    verdict = "holds" if rule.holds else "does not hold"
    return f"rule {rule.number} `{rule.text}` {verdict} ({rule.facts})"


def filter_verdict(item: FilterExplanation) -> str:
    """One filter's verdict on the message: matched, skipped and why, or its first failed rule."""
    if item.skipped:
        return f"filter {item.name!r}: not checked, {SKIPPED.get(item.skipped, item.skipped)}."
    if item.matched:
        return f"filter {item.name!r}: matches (all {count(len(item.rules), 'rule')} hold)."
    failed = next((r for r in item.rules if r.holds is False), None)
    if failed is None:
        return f"filter {item.name!r}: does not match."
    return f"filter {item.name!r}: does not match: {_rule_line(failed)}."


def explanation_lines(explanation: Explanation) -> list[str]:
    """An explanation as lines people read: the same in the bot, the TUI and the CLI.

    The first line names the message; then one line per context, each followed
    by its filters' verdicts when no notification was made.
    """
    summary = explanation.summary or explanation.topic
    lines = [f"Message {explanation.message_id} ({explanation.topic}): {summary}"]
    unused = [
        item.context
        for item in explanation.contexts
        if item.outcome == "context-off"
        and item.filter is None
        and not item.filters
        and not item.destinations
    ]
    for item in explanation.contexts:
        if item.context in unused:
            continue
        lines.append(f"{item.context}: {_context_outcome(item)}")
        if item.changed_since:
            lines.append(
                f"  (your filters changed since it arrived: {item.changed_since} matches it)"
            )
        if item.outcome in ("no-match", "unknown-schema"):
            if not item.filters:
                lines.append(f"  you have no filters in {item.context}.")
            lines.extend(f"  {filter_verdict(f)}" for f in item.filters)
    if unused:
        lines.append(f"Not set up (nothing is sent there): {', '.join(unused)}.")
    return lines


def quiet_hours(start: str | None, end: str | None, timezone: str | None) -> str:
    """A context's quiet hours: ``22:00-07:00 Europe/Prague`` or ``none``."""
    if start is None or end is None:
        return "none"
    return f"{start}-{end} {timezone or 'UTC'}"


#: What each ``Notification.hold_reason`` means, in words (``until`` follows).
_REASONS = {
    "muted": "held while you muted fmn",
    "quiet_hours": "held for your quiet hours",
    "digest": "held for the next digest",
    "rate_limit": "held: too many this hour, they go out as a digest",
    "no_address": "waiting for a confirmed address (confirm one and it goes at once)",
    "offline": "waiting for you to come online on IRC",
    "retry": "sending failed; trying again",
}


#: Reasons whose row is tried again at ``due_at`` rather than held until then.
_RETRIED = frozenset({"no_address", "offline", "retry"})


def waiting_reason(
    state: str, reason: str | None, due_at: dt.datetime | None, last_error: str | None = None
) -> str:
    """Why a notification has not been sent, and until when, as one phrase.

    ``state`` and ``reason`` are a ``Notification``'s ``state`` and
    ``hold_reason``; ``due_at`` is when it is looked at again. The TUI's recent
    notifications, ``fmn pending`` on IRC and ``fmn-daemon outbox`` all say it so.
    """
    if state == "sent":
        return "sent"
    if state == "sending":
        return "being sent now"
    if state == "dead":
        why = f": {last_error}" if last_error else ""
        return f"given up{why}"
    words = _REASONS.get(reason or "")
    if words is None:
        words = "sending failed; trying again" if state == "failed" else "about to be sent"
        if state == "failed" and last_error:
            words = f"{words} ({last_error})"
    if due_at is None:
        return words
    if reason in _RETRIED or (reason is None and state == "failed"):
        return f"{words}; next try {_when(due_at)}"
    return f"{words} until {_when(due_at)}"
