"""The preference rows as core modules read and write them.

Finding and creating the user and preference rows, filters and rules in their
order, and the change events that tell every process's matcher to reload a
user. The write path (:mod:`fmn_core.editing`, :mod:`fmn_core.confirmation`) and
imports (:mod:`fmn_core.portability`) share these; front ends never call them
(they go through :mod:`fmn_core.preferences`).

Uniqueness is checked with a query before inserting, never by catching an
``IntegrityError`` (which would poison the caller's PostgreSQL transaction). That
check, and every other "read the rows, decide, write" of the write path (a cap
not reached, the next position, the filter still there), holds only while nobody
else writes the account meanwhile: every write takes :func:`lock_account` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from .access import Actor, offered_context, target_account
from .accounts import directory_of
from .db import is_postgres, lock_exclusively, lock_for_transaction
from .errors import NotFound, UnknownAccount
from .filters import FilterDraft
from .models import ChangeEvent, Destination, Filter, Preference, Rule, User

__all__ = [
    "add_drafts",
    "existing_filter",
    "find_preference",
    "find_user",
    "lock_account",
    "lock_accounts",
    "lookup_filter",
    "name_taken",
    "ordered_filters",
    "ordered_rules",
    "preference_for_write",
    "preferences_query",
    "record_change",
    "renumber",
    "user_for_write",
]


#: ``session.info`` key: the transaction and the accounts it holds the lock of.
_ACCOUNTS_LOCKED = "fmn_accounts_locked"
#: The lock every account's lock is taken within (shared), for writers of many.
_EVERY_ACCOUNT = "fmn-every-account-lock"
#: ``session.info`` key: the transaction that holds every account's lock at once.
_EVERY_ACCOUNT_LOCKED = "fmn_every_account_locked"
#: Above this many accounts, a writer of many locks them all with one lock:
#: PostgreSQL keeps every advisory lock until the commit in a shared table of about
#: 64 per connection (``max_locks_per_transaction``), which a site-wide import of
#: thousands of accounts one lock each would fill ("out of shared memory").
MAX_SINGLE_LOCKS = 200


def lock_account(session: Session, name: str) -> None:
    """Make this transaction the only writer of account ``name`` until it ends.

    Call it before reading the account's rows to change them. On PostgreSQL, at
    READ COMMITTED, two requests for one account (the TUI and the bot, a link
    clicked twice) would otherwise both read the same rows and decide on them: both
    create the user row, both find a filter name free or a cap not reached, both
    give the next position, one adds a rule to a filter the other deletes; the
    loser then fails on a constraint (an internal error, not a sentence) or the
    account ends up with two filters at one position or past its caps. A
    transaction-scoped advisory lock keyed on the name serializes them (it covers
    an account with no row yet, which a row lock can't), and is waited for within
    the caller's ``lock_timeout`` (``DatabaseBusy`` for a person). SQLite's writers
    already run one at a time (``BEGIN IMMEDIATE``).

    Rows this session loaded earlier in the transaction (a gateway unit's earlier
    calls) may predate the lock, so they are written out and read again.
    """
    if not is_postgres(session):
        return
    transaction = session.get_transaction()
    if session.info.get(_EVERY_ACCOUNT_LOCKED) is transaction:
        return
    held: tuple[object, set[str]] | None = session.info.get(_ACCOUNTS_LOCKED)
    if held is None or held[0] is not transaction:
        held = (transaction, set())
        session.info[_ACCOUNTS_LOCKED] = held
    if name in held[1]:
        return
    lock_for_transaction(session, f"fmn-account-lock\0{name}", within=_EVERY_ACCOUNT)
    held[1].add(name)
    session.flush()
    session.expire_all()


def lock_accounts(session: Session, names: Iterable[str]) -> None:
    """:func:`lock_account` for many accounts (an import, housekeeping).

    In name order, so two such writers never wait on each other crosswise; above
    :data:`MAX_SINGLE_LOCKS` accounts, one lock for every account instead, which
    waits for every writer of one account to finish and holds the others off
    until this transaction ends.
    """
    ordered = sorted(set(names))
    if len(ordered) <= MAX_SINGLE_LOCKS:
        for name in ordered:
            lock_account(session, name)
        return
    if not is_postgres(session):
        return
    transaction = session.get_transaction()
    if session.info.get(_EVERY_ACCOUNT_LOCKED) is transaction:
        return
    lock_exclusively(session, _EVERY_ACCOUNT)
    session.info[_EVERY_ACCOUNT_LOCKED] = transaction
    session.flush()
    session.expire_all()


def find_user(session: Session, name: str) -> User | None:
    """The user row of an account, if it has one."""
    return session.scalars(select(User).where(User.name == name)).one_or_none()


def user_for_write(session: Session, name: str) -> User:
    """The user row, created on first use (queried first, under :func:`lock_account`,
    so two first requests don't both insert it).

    Only for an account the directory knows: preferences for a name nobody holds
    would collect notifications for whoever registers it later.
    """
    user = find_user(session, name)
    if user is None:
        if not directory_of(session).exists(name):
            raise UnknownAccount(name)
        user = User(name=name, confirm_failures=0)
        session.add(user)
        session.flush()
    return user


def preferences_query(user: User) -> Select[Preference]:
    """A user's preference rows, with filters, rules and destinations loaded eagerly."""
    return (
        select(Preference)
        .where(Preference.user_id == user.id)
        .options(
            selectinload(Preference.filters).selectinload(Filter.rules),
            selectinload(Preference.destinations).selectinload(Destination.confirmation),
        )
    )


def find_preference(session: Session, user: User | None, context: str) -> Preference | None:
    """A user's preference row for one context, if there is one."""
    if user is None:
        return None
    statement = preferences_query(user).where(Preference.context == context)
    return session.scalars(statement).one_or_none()


def preference_for_write(session: Session, user: User, context: str) -> Preference:
    """A user's preference row for one context, created (enabled, no digest) on first use."""
    preference = find_preference(session, user, context)
    if preference is None:
        preference = Preference(
            user=user, context=context, enabled=True, digest_minutes=0, digest_count=0
        )
        session.add(preference)
        session.flush()
    return preference


def ordered_filters(preference: Preference) -> list[Filter]:
    """A context's filters in their order."""
    return sorted(preference.filters, key=lambda f: (f.position, f.id or 0))


def ordered_rules(filter_: Filter) -> list[Rule]:
    """A filter's rules in their order."""
    return sorted(filter_.rules, key=lambda r: (r.position, r.id or 0))


def renumber(items: Sequence[Filter | Rule]) -> None:
    """Set positions 1, 2, ... in the order given."""
    for position, item in enumerate(items, start=1):
        if item.position != position:
            item.position = position


def lookup_filter(preference: Preference | None, context: str, name: str) -> Filter:
    """A filter by exact name, else by a unique case-insensitive match."""
    if isinstance(name, str) and preference is not None:
        wanted = name.strip()
        for filter_ in preference.filters:
            if filter_.name == wanted:
                return filter_
        folded = [f for f in preference.filters if f.name.casefold() == wanted.casefold()]
        if len(folded) == 1:
            return folded[0]
    raise NotFound(
        f"There is no filter called {str(name)[:60]!r} in {context}; list your filters to see "
        "their names."
    )


def name_taken(preference: Preference | None, name: str, exclude: Filter | None = None) -> bool:
    """Whether another filter of the context has this name, ignoring case."""
    if preference is None:
        return False
    return any(
        f is not exclude and f.name.casefold() == name.casefold() for f in preference.filters
    )


def record_change(session: Session, user: User, kind: str) -> None:
    """Record a change event: every process's matcher reloads this user."""
    session.add(ChangeEvent(user_id=user.id, kind=kind))
    session.flush()


def existing_filter(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    user: str | None,
    *,
    write: bool = True,
) -> tuple[User, Preference, Filter, str]:
    """The target user's filter, or ``NotFound``; nothing is created. For a ``write``
    the account is locked first (:func:`lock_account`); a read passes ``write=False``."""
    target = target_account(actor, user)
    context = offered_context(session, context)
    if write:
        lock_account(session, target)
    row = find_user(session, target)
    preference = find_preference(session, row, context)
    filter_ = lookup_filter(preference, context, name)
    assert row is not None and preference is not None  # a filter was found under them
    return row, preference, filter_, context


def add_drafts(session: Session, preference: Preference, drafts: Sequence[FilterDraft]) -> None:
    """Append validated filter drafts (a template's, an import's) to a context."""
    position = len(preference.filters)
    for draft in drafts:
        position += 1
        filter_ = Filter(
            preference=preference,
            name=draft.name,
            active=draft.active,
            oneshot=draft.oneshot,
            position=position,
            delivery=draft.delivery,
            urgent=draft.urgent,
            paused_until=draft.paused_until,
        )
        session.add(filter_)
        for number, rule in enumerate(draft.rules, start=1):
            session.add(
                Rule(
                    filter=filter_,
                    name=rule.name,
                    arguments=dict(rule.arguments),
                    negated=rule.negated,
                    position=number,
                    expires_at=rule.expires_at,
                )
            )
