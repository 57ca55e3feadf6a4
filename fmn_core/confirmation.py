"""Destinations a user adds, and the codes that prove they are the user's.

Adding, re-sending, confirming and removing destinations, the addresses a
profile already proves, and the codes the daemon and the bot have yet to send.
Codes are stored hashed, single use, limited per address and per user
(:mod:`fmn_core.code_limits`). :func:`confirm` returns a :class:`ConfirmResult`
rather than raising after it has counted a wrong guess, so the caller's unit of
work keeps the count like any other write.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from .access import Actor, offered_context, target_account
from .accounts import check_account_name, directory_of
from .code_limits import check_code_limits, record_code
from .config import Config
from .db import config_of
from .destinations import (
    FEED_CONTEXTS,
    check_destination,
    check_matrix_id,
    hash_code,
    mask_address,
    new_code,
    new_feed_token,
    normalize_code,
)
from .errors import (
    AccountDirectoryUnavailable,
    AlreadyExists,
    ConfirmationFailed,
    InvalidArgument,
    InvalidDestination,
    NotFound,
    RateLimited,
    UserError,
)
from .models import Confirmation, Destination, Preference, User, utcnow
from .store import (
    find_preference,
    find_user,
    lock_account,
    preference_for_write,
    record_change,
    user_for_write,
)
from .text import irc_fold
from .views import (
    DestinationView,
    OutgoingCode,
    PendingConfirmation,
    destination_view,
)
from .waiting import release_held

__all__ = [
    "MAX_DESTINATIONS_PER_CONTEXT",
    "MAX_PENDING_PER_CONTEXT",
    "ConfirmOutcome",
    "ConfirmResult",
    "confirm",
    "mark_code_sent",
    "pending_confirmation_codes",
    "profile_addresses",
    "remove_destination",
    "resend_confirmation",
    "set_destination",
]

log = logging.getLogger(__name__)

MAX_DESTINATIONS_PER_CONTEXT = 10
#: Unconfirmed addresses a context may hold at once: each one mails a stranger a code.
MAX_PENDING_PER_CONTEXT = 3
_FEED_TOKEN_TRIES = 5


def origin_of(actor: Actor) -> str:
    """The front end an actor acts through: ``irc`` (the bot names the IRC account it
    saw), else ``tui``. Stored with a code so that its message says where to enter it."""
    return "irc" if actor.irc_account is not None else "tui"


def _new_confirmation(
    config: Config, now: dt.datetime, origin: str | None = None
) -> tuple[str, dict[str, Any]]:
    code = new_code()
    return code, {
        "secret_hash": hash_code(code),
        "outgoing_code": code,
        "expires_at": now + dt.timedelta(minutes=config.confirmation.ttl_minutes),
        "created_at": now,
        "origin": origin,
    }


def _regenerate(
    session: Session,
    config: Config,
    user: User,
    destination: Destination,
    now: dt.datetime,
    origin: str | None = None,
) -> str:
    """A new code for a pending destination (the old one stops working), within limits."""
    context = destination.preference.context
    key = check_code_limits(
        session, config.confirmation, user.name, user, context, destination.address, now
    )
    code, values = _new_confirmation(config, now, origin)
    if destination.confirmation is None:
        # Imported or hand-made rows may lack one; start a fresh confirmation.
        destination.confirmation = Confirmation(**values)
    else:
        for field_name, value in values.items():
            setattr(destination.confirmation, field_name, value)
    record_code(session, config.confirmation, user, key, now)
    return code


def _unique_feed_token(session: Session) -> str:
    """A new feed token no destination holds yet (the column is unique as well)."""
    for _ in range(_FEED_TOKEN_TRIES):
        token = new_feed_token()
        taken = session.scalar(select(Destination.id).where(Destination.feed_token == token))
        if taken is None:
            return token
    # 192 random bits colliding again and again means the generator is broken.
    raise RuntimeError(f"no unused feed token after {_FEED_TOKEN_TRIES} tries")


def set_destination(
    session: Session, actor: Actor, context: str, address: str | None, *, user: str | None = None
) -> PendingConfirmation:
    """Add a destination to a context, unconfirmed, with a one-time code to send to it.

    E-mail addresses, IRC nicks and push URLs are checked first
    (:mod:`fmn_core.destinations`). For ``rss`` and ``live`` the address is
    ignored: fmn generates a secret feed token, unique across users, confirmed at
    once, and no code. Giving an address that is already pending makes a new code
    for it. Codes are limited per address and per user (:mod:`fmn_core.code_limits`):
    past a limit this raises ``TooManyCodes`` and writes nothing.
    """
    target = target_account(actor, user)
    context = offered_context(session, context)
    config = config_of(session)
    feed = context in FEED_CONTEXTS
    lock_account(session, target)
    normalized = (
        _unique_feed_token(session)
        if feed
        else check_destination(
            context, address or "", config.push, fcm=config.fcm, matrix=config.matrix
        )
    )
    now = utcnow()
    found_user = find_user(session, target)
    preference = find_preference(session, found_user, context)
    existing = [] if preference is None else list(preference.destinations)
    verified = not feed and _verified_address(session, actor, target, context, normalized)
    for destination in existing:
        if destination.address != normalized:
            continue
        if destination.confirmed:
            raise AlreadyExists(
                f"{mask_address(context, normalized)} is already a confirmed destination for "
                f"{context}."
            )
        if verified:
            destination.confirmed, destination.confirmation = True, None
            record_change(session, destination.preference.user, "destination")
            return PendingConfirmation(destination_view(context, destination), None)
        owner = destination.preference.user
        fresh = _regenerate(session, config, owner, destination, now, origin_of(actor))
        record_change(session, owner, "destination")
        return PendingConfirmation(destination_view(context, destination), fresh)
    if len(existing) >= MAX_DESTINATIONS_PER_CONTEXT:
        raise InvalidArgument(
            f"{context} already has {MAX_DESTINATIONS_PER_CONTEXT} destinations; remove one first.",
            argument="address",
        )
    if not (feed or verified) and sum(not d.confirmed for d in existing) >= MAX_PENDING_PER_CONTEXT:
        raise RateLimited(
            f"{context} already has {MAX_PENDING_PER_CONTEXT} destinations waiting for "
            "confirmation; confirm or remove one first."
        )
    key = (
        None
        if feed or verified
        else check_code_limits(
            session, config.confirmation, target, found_user, context, normalized, now
        )
    )
    row = user_for_write(session, target)
    preference = preference_for_write(session, row, context)
    destination = Destination(
        preference=preference,
        address=normalized,
        feed_token=normalized if feed else None,
        confirmed=feed or verified,
        created_at=now,
    )
    code: str | None = None
    if key is not None:
        code, values = _new_confirmation(config, now, origin_of(actor))
        destination.confirmation = Confirmation(**values)
    session.add(destination)
    if key is not None:
        record_code(session, config.confirmation, row, key, now)
    record_change(session, row, "destination")
    log.info(
        "user %s added %s destination %s", row.name, context, mask_address(context, normalized)
    )
    return PendingConfirmation(destination_view(context, destination), code)


def _verified_address(
    session: Session, actor: Actor, target: str, context: str, address: str
) -> bool:
    """Whether Fedora Accounts already proves this address is the target's, so no code.

    An email listed in the target's profile (Fedora Accounts verifies emails
    before storing them); the Matrix ID the accounts' own homeserver gives the
    target (``matrix.accounts_server``), when the profile lists it; an IRC nick
    that is the services account the actor is identified as right now, when it
    acts for itself. Any other chat identity in a profile proves nothing: anyone
    can write anyone's nick or Matrix ID into their own profile, and the other
    person would then get their notifications with no code asked.
    """
    if context in ("email", "matrix"):
        try:
            profile = directory_of(session).profile(target)
        except AccountDirectoryUnavailable as exc:
            # Not knowing is no proof: the address gets a code, as any other would.
            log.warning("cannot read %s's profile (%s); the address needs a code", target, exc)
            return False
        if profile is None:
            return False
        if context == "matrix":
            return address in _vouched_matrix_ids(session, target, profile.matrix)
        return _email_key(address) in {_email_key(e) for e in profile.emails}
    if context == "irc":
        return (
            actor.irc_account is not None
            and target == actor.name
            and irc_fold(actor.irc_account) == irc_fold(address)
        )
    return False


def _vouched_matrix_ids(session: Session, target: str, listed: Iterable[str]) -> tuple[str, ...]:
    """The profile's Matrix IDs (normalized) that are the target's by the homeserver's
    own login: at most ``@<target>:<matrix.accounts_server>``."""
    server = config_of(session).matrix.accounts_server
    if not server:
        return ()
    own = f"@{target}:{server}"
    for user_id in listed:
        try:
            if check_matrix_id(user_id) == own:
                return (own,)
        except InvalidDestination:
            continue
    return ()


def _email_key(address: str) -> str:
    # Domains are case-insensitive; local parts may not be, so they must match exactly.
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def profile_addresses(
    session: Session, actor: Actor, *, user: str | None = None
) -> dict[str, tuple[str, ...]]:
    """The addresses the account's profile offers, by context (``email``, ``matrix``;
    ``irc`` for the actor's own IRC account): setting one needs no confirmation code."""
    target = target_account(actor, user)
    profile = directory_of(session).profile(target)
    offered: dict[str, tuple[str, ...]] = {}
    if profile is not None and profile.emails:
        offered["email"] = profile.emails
    matrix_ids = _vouched_matrix_ids(session, target, profile.matrix) if profile is not None else ()
    if matrix_ids and config_of(session).matrix.configured:
        offered["matrix"] = matrix_ids
    if actor.irc_account is not None and target == actor.name:
        offered["irc"] = (actor.irc_account,)
    return offered


def resend_confirmation(
    session: Session, actor: Actor, context: str, *, user: str | None = None
) -> PendingConfirmation:
    """A fresh code (the old one stops working) for the context's newest unconfirmed
    destination, within the same limits as :func:`set_destination` (``TooManyCodes``)."""
    target = target_account(actor, user)
    context = offered_context(session, context)
    config = config_of(session)
    lock_account(session, target)
    row = find_user(session, target)
    preference = find_preference(session, row, context)
    pending = (
        []
        if preference is None
        else [d for d in preference.destinations if not d.confirmed and d.confirmation is not None]
    )
    if row is None or not pending:
        raise NotFound(
            f"Nothing in {context} is waiting for confirmation; set a destination first."
        )
    destination = max(pending, key=lambda d: d.id)
    code = _regenerate(session, config, row, destination, utcnow(), origin_of(actor))
    record_change(session, row, "confirmation")
    return PendingConfirmation(destination_view(context, destination), code)


class ConfirmOutcome(StrEnum):
    """What became of a confirmation code."""

    #: The destination is confirmed; notifications go to it from now on.
    CONFIRMED = "confirmed"
    #: No pending code of the actor's matches; the guess was counted.
    WRONG = "wrong"
    #: The code matched but had expired; ask for a new one (not counted as a guess).
    EXPIRED = "expired"
    #: Too many wrong guesses: confirming is locked until ``locked_until``.
    LOCKED = "locked"


@dataclass(frozen=True)
class ConfirmResult:
    """The outcome of :func:`confirm`, with what a front end shows for it.

    ``destination`` is set when the outcome is ``CONFIRMED``; ``locked_until`` when
    it is ``LOCKED``; ``message`` is core's one sentence for the other outcomes.
    """

    outcome: ConfirmOutcome
    destination: DestinationView | None = None
    locked_until: dt.datetime | None = None
    message: str = ""

    def __post_init__(self) -> None:
        # Over the preference gateway the outcome arrives as its plain string value.
        object.__setattr__(self, "outcome", ConfirmOutcome(self.outcome))

    @property
    def confirmed(self) -> bool:
        """Whether the destination is now confirmed."""
        return self.outcome is ConfirmOutcome.CONFIRMED

    def error(self) -> UserError | None:
        """The refusal as the user error class an edge renders (None once confirmed)."""
        if self.outcome is ConfirmOutcome.CONFIRMED:
            return None
        if self.outcome is ConfirmOutcome.LOCKED:
            return RateLimited(self.message)
        return ConfirmationFailed(self.message)


def confirm(session: Session, actor: Actor, code: str) -> ConfirmResult:
    """Confirm one of the actor's own destinations with the code sent to it.

    The code is single-use, case-insensitive and may contain spaces. A wrong guess
    is counted on the user and returned as ``WRONG``; after
    ``confirmation.max_failures`` of them the user is locked out for
    ``confirmation.lockout_minutes`` (``LOCKED``, with until when). Because the
    failures are outcomes, not exceptions, the caller's unit of work commits the
    count like any other write, and no front end needs a workaround to keep it.
    Raises ``ConfirmationFailed`` (having written nothing) only when nothing of
    the actor's waits for confirmation.
    """
    config = config_of(session).confirmation
    name = check_account_name(actor.name)
    # Before the row lock, in the order every write takes them: remove_destination
    # (which locks the destination, then the user row through its change event) and
    # confirm would otherwise each wait for the other.
    lock_account(session, name)
    # The user's row is locked (PostgreSQL; SQLite serializes writers anyway) and read
    # afresh: guesses sent in parallel (the bot is threaded) would otherwise all read
    # the same failure count, each add one to it, and guessing would be unlimited.
    row = session.scalars(
        select(User)
        .where(User.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    now = utcnow()
    if row is not None and row.confirm_locked_until is not None and row.confirm_locked_until > now:
        until = row.confirm_locked_until
        return ConfirmResult(
            ConfirmOutcome.LOCKED,
            locked_until=until,
            message=f"Too many wrong codes; wait until {until:%H:%M} UTC, then try again.",
        )
    pending: list[Confirmation] = []
    if row is not None:
        pending = list(
            session.scalars(
                select(Confirmation)
                .join(Destination, Destination.id == Confirmation.destination_id)
                .join(Preference, Preference.id == Destination.preference_id)
                .where(Preference.user_id == row.id, Destination.confirmed.is_(False))
                .options(
                    selectinload(Confirmation.destination).selectinload(Destination.preference)
                )
            )
        )
    if row is None or not pending:
        raise ConfirmationFailed(
            "You have nothing waiting for confirmation; set a destination first."
        )
    wanted = hash_code(code) if isinstance(code, str) else ""
    found = next((c for c in pending if hmac.compare_digest(c.secret_hash, wanted)), None)
    if found is not None and found.expires_at <= now:
        return ConfirmResult(
            ConfirmOutcome.EXPIRED,
            message="This code has expired; ask for a new code and enter that one.",
        )
    if found is None:
        return _wrong_guess(session, row, code, config.max_failures, config.lockout_minutes, now)
    destination = found.destination
    context = destination.preference.context
    destination.confirmed = True
    destination.confirmation = None
    row.confirm_failures = 0
    row.confirm_locked_until = None
    record_change(session, row, "confirmation")
    # What waited for a confirmed address goes now, not at its next hourly retry.
    release_held(session, row.id, ("no_address",), context=context)
    log.info(
        "user %s confirmed %s destination %s",
        row.name,
        context,
        mask_address(context, destination.address),
    )
    return ConfirmResult(ConfirmOutcome.CONFIRMED, destination_view(context, destination))


def _wrong_guess(
    session: Session,
    row: User,
    code: object,
    max_failures: int,
    lockout_minutes: int,
    now: dt.datetime,
) -> ConfirmResult:
    """Count a wrong guess; the one that reaches ``max_failures`` locks confirming."""
    row.confirm_failures = (row.confirm_failures or 0) + 1
    if row.confirm_failures >= max_failures:
        row.confirm_failures = 0
        row.confirm_locked_until = now + dt.timedelta(minutes=lockout_minutes)
        session.flush()
        log.warning("user %s locked out of confirming after %d wrong codes", row.name, max_failures)
        return ConfirmResult(
            ConfirmOutcome.LOCKED,
            locked_until=row.confirm_locked_until,
            message=f"Too many wrong codes; wait {lockout_minutes} minutes, then try again.",
        )
    session.flush()
    shown = normalize_code(code)[:12] if isinstance(code, str) else ""
    return ConfirmResult(
        ConfirmOutcome.WRONG,
        message=(
            f"The code {shown!r} is wrong or was already used; check it, or ask for a new code."
        ),
    )


def remove_destination(
    session: Session, actor: Actor, context: str, destination_id: int, *, user: str | None = None
) -> None:
    """Delete one of the context's destinations (and any pending code for it)."""
    target = target_account(actor, user)
    context = offered_context(session, context)
    lock_account(session, target)
    preference = find_preference(session, find_user(session, target), context)
    destination = None
    if preference is not None and type(destination_id) is int:
        # Only ever inside the target's own preference: an id alone reaches nothing.
        destination = next((d for d in preference.destinations if d.id == destination_id), None)
    if preference is None or destination is None:
        raise NotFound(
            f"There is no destination {str(destination_id)[:20]} in {context}; list the "
            "context to see its destinations."
        )
    preference.destinations.remove(destination)
    record_change(session, preference.user, "destination")


def pending_confirmation_codes(
    session: Session, contexts: Iterable[str] | None = None
) -> list[OutgoingCode]:
    """Codes made but not yet sent (and not expired), for the daemon and the bot to
    deliver; call :func:`mark_code_sent` after each one has gone out."""
    statement = (
        select(Confirmation, Destination, Preference, User)
        .join(Destination, Destination.id == Confirmation.destination_id)
        .join(Preference, Preference.id == Destination.preference_id)
        .join(User, User.id == Preference.user_id)
        .where(
            Confirmation.outgoing_code.is_not(None),
            Confirmation.expires_at > utcnow(),
            Destination.confirmed.is_(False),
        )
        .order_by(Confirmation.id)
    )
    if contexts is not None:
        wanted = [contexts] if isinstance(contexts, str) else list(contexts)
        statement = statement.where(Preference.context.in_(wanted))
    return [
        OutgoingCode(
            destination.id,
            user.name,
            preference.context,
            destination.address,
            str(confirmation.outgoing_code),
            confirmation.origin,
        )
        for confirmation, destination, preference, user in session.execute(statement)
    ]


def mark_code_sent(session: Session, destination_id: int, code: str | None = None) -> bool:
    """Forget a code's clear text once it is sent; False if it was confirmed or removed
    meanwhile, or (given the ``code`` that went) replaced by a newer code, whose clear
    text stays for its own sending."""
    # Locked and read afresh: a confirmation or removal committing between a plain read
    # and the write would leave the UPDATE matching no row (StaleDataError, a traceback
    # in the daemon or the bot). Locked, a row deleted meanwhile is simply not found.
    confirmation = session.scalars(
        select(Confirmation)
        .where(Confirmation.destination_id == destination_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if confirmation is None:
        return False
    if code is not None and not hmac.compare_digest(confirmation.secret_hash, hash_code(code)):
        # The user asked for a new code while this one was going out.
        return False
    confirmation.outgoing_code = None
    confirmation.sent_count = (confirmation.sent_count or 0) + 1
    confirmation.last_sent_at = utcnow()
    session.flush()
    return True
