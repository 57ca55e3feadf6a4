"""The matcher: who gets a bus message, without looking at every user.

Users' preferences are compiled once into *entries*, one per active filter of an
enabled, offered context. Each entry holds the user's ``RuleContext``, the fields of
the ``Recipient`` it stands for (built when an answer names it) and its *plan*: the
rules as ``(function, arguments, negated, name, cache key)`` tuples, shared by every
filter with the same rule list, so matching a message is a loop of plain function
calls.

The index files every entry under the hint values of its most selective
positive rule that has an index hint (lowest ``IndexHint.rank``, then fewest
values): ``index["package"]["kernel"]`` holds the filters that can only match
messages about ``kernel``. Entries with no such rule go into the "always"
set. A message is checked against the union of the buckets its
``MessageFacts.index_keys`` name, plus the always set, and nothing else. That is
why the cost per message stays nearly flat as users are added: it grows with
the number of filters that could match, not with the number of users.

Hints can depend on package ownership (``package_owned_by_me``) and group
membership (``member_of_group_involved``); the matcher notices which hints read
either lookup when it files them, and ``set_ownership`` files those again.
``follow_directory`` makes the account directory forget what Fedora Accounts'
bus messages changed and files the hints of the users they name anew.

Updates are per user: ``refresh_users`` reloads some users' rows and replaces
their entries; ``apply_changes`` finds the users to refresh in the
``change_events`` table. A ``Matcher`` is not thread-safe: the thread that
matches messages also applies changes, between messages.
"""

from __future__ import annotations

import datetime as dt
import dis
import gc
import heapq
import itertools
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .accounts import AccountDirectory, LocalDirectory, account_directory, directory_changes
from .config import CONTEXTS
from .db import catalog_of, config_of
from .errors import InvalidArgument, UnknownRule
from .messages import MessageFacts
from .models import ChangeEvent, utcnow
from .rules import (
    INDEX_KEYS,
    Catalog,
    HintOwner,
    MembershipLookup,
    OwnershipLookup,
    RuleContext,
    RuleFunction,
    RuleSpec,
)
from .rules import default_catalog as _default_catalog
from .snapshots import (
    ContextSnapshot,
    FilterSnapshot,
    RuleSnapshot,
    SnapshotStream,
    StreamedContext,
    StreamedFilter,
    StreamedUser,
    UserSnapshot,
    load_snapshots,
    slot_setters,
)

__all__ = [
    "GAP_WINDOW",
    "ContextSnapshot",
    "FilterOutcome",
    "FilterSnapshot",
    "Matcher",
    "MatcherStats",
    "Recipient",
    "RuleOutcome",
    "RuleSnapshot",
    "UserSnapshot",
    "load_snapshots",
]

log = logging.getLogger(__name__)

#: How many (rule, message id) failures are remembered so each is logged once.
_FAILURES_REMEMBERED = 4096
#: A change-event id skipped over may belong to a transaction that commits late
#: (PostgreSQL hands out sequence values before commit); it is looked for again
#: for this long, then given up as rolled back or deleted.
_GAP_SECONDS = 300.0
#: How far below the newest change-event id such ids are looked for (retention never
#: prunes a change this close to the newest, which would look like one).
GAP_WINDOW = 1000


class Recipient(NamedTuple):
    """One (user, context) a message goes to, and the first filter that matched it.

    A named tuple rather than a frozen dataclass: answers build one for each
    (user, context) they name, and a frozen dataclass's ``__init__`` costs three
    times as much (1.6 against 0.5 µs).
    """

    user_id: int
    user: str
    context: str
    filter_id: int
    filter_name: str


@dataclass(frozen=True, slots=True)
class MatcherStats:
    """How the loaded filters are spread over the index."""

    users: int
    #: Filters that can match at all (active, enabled and offered context, known rules).
    filters: int
    #: Filed under index values.
    indexed: int
    #: Checked against every message: no positive rule with a usable hint.
    always: int
    #: Filed nowhere because their hint has no values (say, no packages owned yet).
    never: int
    #: Distinct (key, value) buckets in the index.
    buckets: int
    #: Groups of identical filters of different users, each evaluated once per message.
    groups: int = 0
    #: Filters in those groups.
    grouped: int = 0


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule of a filter as the matcher evaluated it for one message (``explain``)."""

    name: str
    arguments: Mapping[str, Any]
    negated: bool
    #: Whether it held (negation applied); ``None`` when it was not evaluated: an
    #: earlier rule of the filter did not hold, the filter is skipped, or it expired.
    holds: bool | None
    #: It raised, which counts as not holding (as in ``recipients``).
    raised: bool = False
    #: Its expiry has passed: the matcher dropped it from the filter.
    expired: bool = False


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    """One filter of a user for one message: whether it matched, and rule by rule why."""

    context: str
    filter_id: int
    name: str
    #: 1-based, the order the context's filters are tried in.
    position: int
    active: bool
    #: Why the matcher does not evaluate this filter at all, or ``""`` when it does.
    skipped: str
    matched: bool
    rules: tuple[RuleOutcome, ...]


#: Why a filter is not compiled, as ``FilterOutcome.skipped`` says it.
SKIP_CONTEXT_OFF = "context-off"
SKIP_CONTEXT_NOT_OFFERED = "context-not-offered"
SKIP_INACTIVE = "inactive"
SKIP_PAUSED = "paused"
SKIP_NO_RULES = "no-rules"
SKIP_BROKEN = "broken-rule"


class _Nobody:
    """The ownership lookup used when none is given: nobody owns anything."""

    def packages_of(self, owner: str) -> frozenset[str]:
        return frozenset()

    def owners_of(self, package: str) -> frozenset[str]:
        return frozenset()


class _Recording:
    """Wraps the ownership and membership lookups to find out whether a hint consulted them."""

    __slots__ = ("lookup", "membership", "used")

    def __init__(self, lookup: OwnershipLookup, membership: AccountDirectory) -> None:
        self.lookup = lookup
        self.membership = membership
        self.used = False

    def groups_of(self, name: str) -> frozenset[str]:
        self.used = True
        return self.membership.groups_of(name)

    def packages_of(self, owner: str) -> frozenset[str]:
        self.used = True
        return self.lookup.packages_of(owner)

    def owners_of(self, package: str) -> frozenset[str]:
        self.used = True
        return self.lookup.owners_of(package)


#: (function, validated arguments, negated, name, and the key it is cached by in
#: ``Matcher._compiled``: the stored arguments as a value, or ``None`` if they
#: are not plain values).
_CompiledRule = tuple[RuleFunction, Mapping[str, Any], bool, str, "_RuleKey | None"]
_RuleKey = tuple[Any, ...]
#: A filter's rules with their arguments, as a value: equal for identical rule lists.
_RulesKey = tuple[_RuleKey, ...]
#: (user, context) as one integer, ``user_id * len(contexts) + the context's rank by
#: name``: sorting a message's answers by it sorts them by user, then context, and
#: integers sort several times faster than tuples.
_Slot = int


class _Plan:
    """What every filter with one rule list shares: its compiled rules, its hinted
    rules, its group key, and where it is filed when that does not depend on whose
    filter it is.

    One per distinct rule list (82,673 for 423,401 filters at 100k users): the
    filing, the hint calls behind it and the tuple of values are then built once
    per list rather than once per filter.
    """

    __slots__ = ("filing", "group_key", "hinted", "lead", "proved", "rules", "rules_key")

    def __init__(
        self,
        rules: tuple[_CompiledRule, ...],
        hinted: tuple[tuple[RuleSpec, Mapping[str, Any]], ...],
        rules_key: _RulesKey | None,
    ) -> None:
        self.rules = rules
        #: Where in ``rules`` the rule stands whose exact hint (``IndexHint.exact``)
        #: gave the filing: a group found there skips it (``_SharedFilter.rules``).
        #: A position, not the shorter tuple: 82,673 plans at 100k users would hold
        #: 5 MiB of them, and only grouped filters use it.
        self.proved: int | None = None
        #: The positive rules with a hint (``_file`` picks the most selective).
        self.hinted = hinted
        #: The rules as a value shared by the filters with the same rules; ``None``
        #: when they read whose filter it is, so they are never grouped.
        self.rules_key = rules_key
        #: ``(key, values)`` for every filter with these rules, when no hint reads
        #: whose filter it is (nor, through it, ownership or membership); else
        #: ``None``: each filter is filed by its own hint calls.
        self.filing: _Filing | None = None
        #: The group key that filing gives, when there is one.
        self.group_key: _GroupKey | None = None
        #: When each filter is filed by its own hint calls and one hinted rule alone
        #: has the best rank: that rule, whose values decide the filing whenever it
        #: has any (``Matcher._personal_filing``).
        self.lead: tuple[RuleSpec, Mapping[str, Any]] | None = None


class _Entry:
    """One compiled filter: what to evaluate, for whom, and where it is filed.

    The ``Recipient`` it stands for is not kept: it is built from these fields
    when a message's answer names it (``_recipient``), which saves an object of
    72 bytes per filter (409k at 100k users).
    """

    __slots__ = (
        "context",
        "dynamic",
        "filter_id",
        "filter_name",
        "group",
        "key",
        "order",
        "plan",
        "slot",
        "values",
    )

    def __init__(
        self,
        slot: _Slot,
        order: int,
        plan: _Plan,
        context: RuleContext,
        filter_id: int,
        filter_name: str,
        key: str | None,
        values: _Values,
        dynamic: bool,
    ) -> None:
        #: (user id, context) as one integer (``_Slot``).
        self.slot = slot
        self.order = order
        #: Its rules (``plan.rules``) and how it is filed.
        self.plan = plan
        self.context = context
        self.filter_id = filter_id
        self.filter_name = filter_name
        #: Where it is filed: a key and values, or ``None`` for the always set.
        self.key = key
        self.values = values
        #: Whether filing it read the ownership lookup (``set_ownership`` refiles it).
        self.dynamic = dynamic
        #: The group it is evaluated in, when other users' filters are the same.
        self.group: _SharedFilter | None = None


def _recipient(entry: _Entry, contexts: Sequence[str]) -> Recipient:
    """The recipient an entry stands for; ``contexts`` are the matcher's, sorted."""
    user_id, rank = divmod(entry.slot, len(contexts))
    return Recipient(
        user_id, entry.context.owner, contexts[rank], entry.filter_id, entry.filter_name
    )


class _SharedFilter:
    """Filters of many users with the same rules, filed the same way: evaluated once.

    5,000 users watching ``app_is bodhi`` + ``topic_matches …`` would otherwise cost
    5,000 evaluations of the same two rules for every such message. Only filters
    whose rules never look at whose filter it is (``_impersonal``) and whose
    filing did not read the ownership lookup are grouped.
    """

    __slots__ = ("_answer", "_by_slot", "_recipients", "context", "key", "members", "rules")

    def __init__(self, key: _GroupKey, first: _Entry) -> None:
        self.key = key
        rules, proved = first.plan.rules, first.plan.proved
        #: Found only under the filing every member shares, whose exact hint's rule
        #: that lookup has checked (``_Plan.proved``).
        self.rules = rules if proved is None else rules[:proved] + rules[proved + 1 :]
        #: Any member's context: the rules don't read it (they are impersonal).
        self.context = first.context
        self.members: set[_Entry] = {first}
        self._by_slot: dict[_Slot, _Entry] | None = None
        self._answer: list[Recipient] | None = None
        self._recipients: dict[_Slot, Recipient] | None = None

    def add(self, entry: _Entry) -> None:
        self.members.add(entry)
        self._by_slot = self._answer = self._recipients = None

    def discard(self, entry: _Entry) -> None:
        self.members.discard(entry)
        self._by_slot = self._answer = self._recipients = None

    def recipients(self, contexts: Sequence[str]) -> dict[_Slot, Recipient]:
        """``by_slot``'s members as recipients, built once after a change: a message
        about a watched application names thousands of them, every time."""
        recipients = self._recipients
        if recipients is None:
            recipients = self._recipients = {
                slot: _recipient(entry, contexts) for slot, entry in self.by_slot.items()
            }
        return recipients

    def answer(self, contexts: Sequence[str]) -> list[Recipient]:
        """The recipients when this group is all that matched a message, in order.

        The usual case for a message about a watched application: its answer is
        then a copy of this list, however many watch it.
        """
        answer = self._answer
        if answer is None:
            recipients = self.recipients(contexts)
            answer = self._answer = [recipients[slot] for slot in sorted(recipients)]
        return answer

    @property
    def by_slot(self) -> dict[_Slot, _Entry]:
        """Each member's slot and its first member there (built again after a change).

        Merged into a message's answers in one ``dict.update`` when none of
        these slots has an answer yet, which is the usual case.
        """
        by_slot = self._by_slot
        if by_slot is None:
            by_slot = {}
            for entry in sorted(self.members, key=lambda e: e.order, reverse=True):
                by_slot[entry.slot] = entry
            self._by_slot = by_slot
        return by_slot


#: (rules with their arguments, index key, index values): what makes filters the same.
_GroupKey = tuple[_RulesKey, str | None, Collection[str]]
_Filed = _Entry | _SharedFilter
#: What one index value holds: its only filter as itself (most values have one; a
#: list of one would cost 80 bytes more, ~270k times at 100k users), or a list.
_Bucket = _Filed | list[_Filed]
#: A rule list as read and its plan (or why it has none), by the identity of the
#: tuple (``Matcher._known``).
_Known = tuple[tuple[RuleSnapshot, ...], "_Plan | _Unusable"]
#: A rule name's spec, whether its function never reads whose filter it is
#: (``_impersonal``), whether it has a hint on a key of the index, and whether that
#: hint never reads whose filter it is: worked out once per name while compiling.
_Kind = tuple[RuleSpec, bool, bool, bool]
#: A user's context for index hints, whose lookups note whether they were read.
_Probe = tuple["_Recording", RuleContext]
#: A user's filings by their plans' lead rule (the identity of its arguments):
#: the filing and whether it read the ownership lookup.
_Leads = dict[int, tuple["_Filing", bool]]


#: The index's own key for filters filed under whose packages they are about
#: (``_owner_filing``): never a key of a message's ``index_keys``.
_BY_OWNER = "package owner"
#: An entry's index values: one value as the string itself, or a collection.
_Values = str | Collection[str]
#: Where a filter is filed: an index key and its values, or ``(None, ())`` for the
#: always set.
_Filing = tuple[str | None, _Values]


def _each(values: _Values) -> Collection[str]:
    """Index values as a collection (one value is held as the bare string)."""
    return (values,) if isinstance(values, str) else values


def _filing(
    hinted: Iterable[tuple[RuleSpec, Mapping[str, Any]]],
    context: RuleContext,
    owner: str | None = None,
) -> _Filing:
    """Where a filter with these hinted rules (sorted by rank) is filed: its most
    selective hint's values, the fewest values among hints of one rank.

    For one user's filter (``owner``), a hint that raises is logged and passed over;
    without an owner it raises.
    """
    return _filing_by(hinted, context, owner)[0]


def _filing_by(
    hinted: Iterable[tuple[RuleSpec, Mapping[str, Any]]],
    context: RuleContext,
    owner: str | None = None,
) -> tuple[_Filing, tuple[RuleSpec, Mapping[str, Any]] | None]:
    """``_filing``, and the hinted rule whose values it is (``None`` when filed under
    the owner of those values, or nowhere)."""
    best: tuple[int, int, str, frozenset[str]] | None = None
    # The winning hint's rule and arguments, and whose packages it names (if it does).
    won: tuple[RuleSpec, Mapping[str, Any]] | None = None
    won_owner: HintOwner | None = None
    for spec, arguments in hinted:
        assert spec.hint is not None  # only hinted rules are kept in ``hinted``
        if best is not None and spec.hint.rank > best[0]:
            # Sorted by rank: no hint from here on can win, whatever its values
            # (so a filing that did not read the ownership lookup yet never will).
            break
        try:
            values = spec.index_values(arguments, context)
        except Exception:  # a broken hint only costs speed, never matches
            if owner is None:
                raise
            log.warning(
                "rule %s: index hint failed for a filter of %s; it is checked "
                "against every message",
                spec.name,
                owner,
                exc_info=True,
            )
            continue
        if values is None:
            continue
        candidate = (spec.hint.rank, len(values), spec.hint.key, values)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
            won, won_owner = (spec, arguments), spec.hint.owner
    if best is None:
        return (None, ()), None
    values = best[3]
    if won_owner is not None and values and won is not None:
        by_owner = _owner_filing(won, context)
        if by_owner is not None:
            return by_owner, None
    if len(values) == 1:
        (value,) = values
        if isinstance(value, str) and value:
            # Most filings name one value ("me", one package): the string itself,
            # not a tuple of one (48 bytes, ~270k times at 100k users).
            return (best[2], value), won
    # A few values fit in a tuple at a third of a frozenset's size; larger sets
    # usually come shared from the ownership lookup.
    return (best[2], tuple(values) if len(values) <= 4 else values), won


def _proved(
    rules: tuple[_CompiledRule, ...],
    won: tuple[RuleSpec, Mapping[str, Any]] | None,
    filing: _Filing,
) -> int | None:
    """Where in ``rules`` the rule the filing came from stands, when its hint is exact:
    a filter found under those values has passed that rule (an app watcher's
    ``topic_matches`` on a literal topic, say, checked by the index's own lookup)."""
    if won is None:
        return None
    spec, arguments = won
    hint = spec.hint
    if hint is None or not hint.exact or hint.key != filing[0]:
        return None
    for i, (function, compiled_arguments, negated, _name, _key) in enumerate(rules):
        if function is spec.function and compiled_arguments is arguments and not negated:
            return i
    return None


def _owner_filing(
    hinted: tuple[RuleSpec, Mapping[str, Any]], context: RuleContext
) -> _Filing | None:
    """The filing under an owner's name for a hint whose values are that owner's
    packages (``IndexHint.owner``), or ``None`` for a hint of any other kind.

    One placement instead of one per package: 115k filters about their owners'
    packages were 657k placements at 100k users, most of them in lists of their own.
    ``Matcher._candidates`` finds them through ``owners_of`` of a message's packages.
    """
    spec, arguments = hinted
    hint = spec.hint
    if hint is None or hint.owner is None or hint.key != "package":
        return None
    try:
        owner = hint.owner(arguments, context)
    except Exception:  # filed under the packages themselves, which is never wrong
        log.warning(
            "rule %s: its index hint's owner failed; filed under the packages instead",
            spec.name,
            exc_info=True,
        )
        return None
    if not isinstance(owner, str) or not owner:
        return None
    return _BY_OWNER, owner


def _group_key(rules_key: _RulesKey, filing: _Filing) -> _GroupKey:
    key, values = filing
    # Equal sets of several values may list them in different orders.
    return (
        rules_key,
        key,
        values if isinstance(values, str) or len(values) <= 1 else frozenset(values),
    )


def _entry_group_key(entry: _Entry) -> _GroupKey | None:
    """The key of the group an entry belongs in, or ``None`` when it is never grouped:
    its rules read whose filter it is, or its filing read the ownership lookup."""
    plan = entry.plan
    if entry.dynamic or plan.rules_key is None:
        return None
    if plan.group_key is not None:
        return plan.group_key
    return _group_key(plan.rules_key, (entry.key, entry.values))


def _merge(
    group: _SharedFilter,
    best: dict[_Slot, _Entry],
    answers: dict[_Slot, Recipient],
    contexts: Sequence[str],
) -> None:
    """Each member of a matched group is its slot's answer unless an earlier filter
    of that slot matched already; ``answers`` holds each slot's recipient."""
    by_slot = group.by_slot
    recipients = group.recipients(contexts)
    if best.keys().isdisjoint(by_slot):
        best.update(by_slot)
        answers.update(recipients)
        return
    for slot, entry in by_slot.items():
        held = best.get(slot)
        if held is None or held.order > entry.order:
            best[slot] = entry
            answers[slot] = recipients[slot]


def _impersonal(function: RuleFunction) -> bool:
    """Whether a rule function never reads its ``context`` argument (whose filter it is).

    Read from the function's bytecode, conservatively: anything but a plain
    function whose second parameter is never loaded counts as personal.
    """
    code = getattr(function, "__code__", None)
    if code is None or code.co_argcount < 2:
        return False
    name = code.co_varnames[1]
    if name in code.co_cellvars:  # an inner function or lambda reads it
        return False
    for instruction in dis.get_instructions(code):
        if "FAST" not in instruction.opname and "DEREF" not in instruction.opname:
            continue  # only these name local variables
        value = instruction.argval
        if value == name or (isinstance(value, tuple) and name in value):
            return False
    return True


#: A loaded user: the entries their snapshot gave (their name is their entries'
#: context's owner), or their name alone when it gave none. The snapshot itself
#: is not kept: at 100k users it is hundreds of MB, and nothing after compiling
#: needs more than the name. Not an object holding both: 100k of them are 5 MB.
_UserState = tuple[_Entry, ...] | str


def _entries_of(state: _UserState) -> tuple[_Entry, ...]:
    return () if isinstance(state, str) else state


def _name_of(state: _UserState) -> str:
    return state if isinstance(state, str) else state[0].context.owner


@dataclass(frozen=True, slots=True)
class _Unusable:
    """Why a filter is not compiled: its rule ``name`` is not installed (``unknown``),
    or its stored arguments are no longer valid."""

    name: str
    unknown: bool


class _LoadProblems:
    """Problems found while compiling, logged once per call rather than once per filter."""

    def __init__(self) -> None:
        self.unknown: defaultdict[str, list[str]] = defaultdict(list)
        self.invalid: defaultdict[str, list[str]] = defaultdict(list)

    def log(self) -> None:
        for name, users in sorted(self.unknown.items()):
            log.warning(
                "rule %r is not installed; %d filter(s) using it match nothing until it is "
                "(users: %s)",
                name,
                len(users),
                _sample(users),
            )
        for name, users in sorted(self.invalid.items()):
            log.warning(
                "rule %r: stored arguments are no longer valid for %d filter(s), which match "
                "nothing until they are edited (users: %s)",
                name,
                len(users),
                _sample(users),
            )


class _Compiling:
    """What the users compiled by one ``Matcher._add_users`` call share: each distinct
    rule list's plan, the problems found, and a context for hints that do not ask
    whose filter it is."""

    __slots__ = ("_timed", "kinds", "plans", "probe", "problems")

    def __init__(self, ownership: OwnershipLookup, membership: AccountDirectory) -> None:
        self.problems = _LoadProblems()
        #: Compiled rule lists by the identity of the users' rule tuple: users read
        #: together share one tuple per distinct list (thousands of users'
        #: ``app_is bodhi``), which is then compiled once. The tuple is kept with
        #: its result so that its id is not reused meanwhile.
        self.plans: dict[int, _Known] = {}
        #: What a rule name's spec says for every list it is in (``_Kind``).
        self.kinds: dict[str, _Kind] = {}
        self._timed: dict[int, tuple[tuple[RuleSnapshot, ...], bool]] = {}
        recording = _Recording(ownership, membership)
        self.probe: _Probe = recording, RuleContext("", recording, recording)

    def timed(self, rules: tuple[RuleSnapshot, ...]) -> bool:
        """Whether a rule of this list expires (worked out once per list)."""
        known = self._timed.get(id(rules))
        if known is None:
            timed = any(rule.expires_at is not None for rule in rules)
            known = self._timed[id(rules)] = rules, timed
        return known[1]


def _context_of(preference: StreamedContext) -> str:
    return preference[0]


def _hint_rank(hinted: tuple[RuleSpec, Mapping[str, Any]]) -> int:
    hint = hinted[0].hint
    return hint.rank if hint is not None else 0


def _rule_context(
    owner: str, ownership: OwnershipLookup, membership: MembershipLookup
) -> RuleContext:
    """``RuleContext(owner, ownership, membership)`` at a third of the cost.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; its slots' own descriptors are quicker (two contexts
    per user while loading: 200k at 100k users).
    """
    context = _new_context(RuleContext)
    _set_context_owner(context, owner)
    _set_context_ownership(context, ownership)
    _set_context_membership(context, membership)
    return context


_new_context = object.__new__
_set_context_owner, _set_context_ownership, _set_context_membership = slot_setters(
    RuleContext, "owner", "ownership", "membership"
)


@contextmanager
def _collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector while compiling many users.

    Compiling allocates hundreds of thousands of long-lived objects and no
    garbage cycles; left on, the collector rescans all of them again and again
    and loading 10k users takes three times as long. With ``freeze``, what
    exists at the end is moved out of the collector's reach (``gc.freeze``)
    before it runs again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


def _default_directory() -> AccountDirectory:
    # Without a session there is no configuration to name a directory: nobody is in a group.
    return LocalDirectory()


def _moments(filter_: FilterSnapshot) -> Iterator[dt.datetime]:
    """The times at which this filter's compiled form changes by itself."""
    if filter_.paused_until is not None:
        yield filter_.paused_until
    for rule in filter_.rules:
        if rule.expires_at is not None:
            yield rule.expires_at


def _paused(filter_: FilterSnapshot, now: dt.datetime) -> bool:
    return filter_.paused_until is not None and filter_.paused_until > now


def _unexpired(filter_: FilterSnapshot, now: dt.datetime) -> FilterSnapshot:
    """The filter without its rules whose expiry has passed (the same object if none)."""
    if all(rule.expires_at is None or rule.expires_at > now for rule in filter_.rules):
        return filter_
    kept = tuple(r for r in filter_.rules if r.expires_at is None or r.expires_at > now)
    return FilterSnapshot(filter_.filter_id, filter_.name, kept, filter_.active)


def _sample(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(set(names))[:limit])
    return shown + (", ..." if len(set(names)) > limit else "")


class Matcher:
    """Compiled, indexed preferences of every user; answers ``recipients(facts)``."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        ownership: OwnershipLookup | None = None,
        contexts: Iterable[str] | None = None,
        membership: AccountDirectory | None = None,
    ) -> None:
        self.catalog = catalog if catalog is not None else _default_catalog()
        self.ownership: OwnershipLookup = ownership if ownership is not None else _Nobody()
        #: Who is in which group (the account directory; the local one knows no groups).
        self.membership: AccountDirectory = (
            membership if membership is not None else _default_directory()
        )
        #: The contexts the deployment offers; preferences for any other are ignored.
        self.contexts = frozenset(CONTEXTS if contexts is None else contexts)
        #: The contexts by name, and each one's rank there (``_Slot``).
        self._context_names = tuple(sorted(self.contexts))
        self._context_rank = {name: rank for rank, name in enumerate(self._context_names)}
        self._users: dict[int, _UserState] = {}
        #: key -> value -> entries. Lists, not sets: most buckets hold one or two
        #: entries, and an entry is never filed twice under one value.
        self._index: dict[str, dict[str, _Bucket]] = {key: {} for key in INDEX_KEYS}
        #: Owner -> filters about that owner's packages (``_owner_filing``).
        self._by_owner: dict[str, _Bucket] = {}
        self._index[_BY_OWNER] = self._by_owner
        self._always: set[_Filed] = set()
        #: What ``stats`` reports, counted as entries are filed and unfiled: counting
        #: them over every entry took 0.1 s at 100k users, on the daemon's way to ready
        #: (it logs them), mostly in fetching 409k scattered entries from memory.
        self._filed = 0
        #: Entries filed under a key with no values: nowhere.
        self._nowhere = 0
        self._group_count = 0
        #: Entries in those groups.
        self._grouped = 0
        self._failures: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: The newest change event applied, and skipped ids that may still commit.
        self.last_change_id = 0
        self._gaps: dict[int, float] = {}
        #: Compiled rules by (rule, arguments, negated): thousands of users share
        #: ``app_is bodhi``, so it is validated once and stored once.
        self._compiled: dict[_RuleKey, _CompiledRule] = {}
        #: Groups of identical impersonal filters, by what makes them identical.
        #: A filter alone so far with its key is held as itself (and filed as
        #: itself): most keys never get a second filter, and a group of one
        #: would only cost memory. The second turns it into a group.
        self._groups: dict[_GroupKey, _SharedFilter | _Entry] = {}
        #: Rule functions by whether they read their context (``_impersonal``).
        self._impersonal: dict[RuleFunction, bool] = {}
        #: User id by account name, for ``follow_directory``.
        self._ids_by_name: dict[str, int] = {}
        #: When a user's compiled filters change by themselves (a pause ends, a
        #: time-bound rule expires): ``(time, user id)``, soonest first.
        #: ``apply_changes`` reloads those users once their time has come.
        self._wakes: list[tuple[dt.datetime, int]] = []
        #: The clock pauses and expiries are read against (tests move it).
        self.clock: Callable[[], dt.datetime] = utcnow

    # -- building --------------------------------------------------------------

    @classmethod
    def load(
        cls,
        session: Session,
        catalog: Catalog | None = None,
        ownership: OwnershipLookup | None = None,
        contexts: Iterable[str] | None = None,
        membership: AccountDirectory | None = None,
        *,
        load_ownership: Callable[[Session], OwnershipLookup] | None = None,
        concurrent: bool = False,
    ) -> Matcher:
        """Compile every user's preferences from the database.

        ``contexts`` defaults to the ones the session's configuration offers,
        ``membership`` to the account directory it names. Without ``ownership``
        nobody owns anything; ``load_ownership`` (the daemon's
        ``OwnershipCache.load``) reads it instead, once the preferences' queries
        are started. With ``concurrent`` (PostgreSQL, a session without uncommitted
        writes) those queries run on connections of their own while the
        ownership is read and the users are compiled (see ``SnapshotStream``).
        Changes recorded after this call are picked up by ``apply_changes``.
        """
        if contexts is None:
            contexts = config_of(session).contexts
        if membership is None:
            membership = account_directory(config_of(session))
        # Read the high-water mark first: a change committed while the rows are
        # being read is then applied again later rather than missed. Ids missing
        # just below it may belong to transactions still in flight.
        newest = session.scalar(select(func.max(ChangeEvent.id))) or 0
        recent = session.scalars(
            select(ChangeEvent.id).where(ChangeEvent.id >= newest - GAP_WINDOW)
        ).all()
        # What is built from here on (the ownership lookup, then the compiled
        # users) lives as long as the matcher, and none of it is a cycle: the
        # collector is paused and, at the end, all of it frozen out of its reach
        # before it runs again (otherwise its first run would scan every one of
        # those millions of objects: seconds). Paused from the ownership on, not
        # only for the users: building the ownership (219,095 rows into ~110k
        # sets and tuples at 100k users) set off three full collections, each
        # over everything the process held, about 0.25 CPU-s.
        with (
            SnapshotStream(session, concurrent=concurrent) as stream,
            _collector_paused(freeze=True),
        ):
            # The database sorts the preferences' rows meanwhile (when concurrent).
            lookup = load_ownership(session) if load_ownership is not None else ownership
            matcher = cls(
                catalog if catalog is not None else catalog_of(session),
                lookup,
                contexts,
                membership,
            )
            matcher._note_gaps(set(recent), 0, newest)
            matcher.last_change_id = newest
            # Each user is compiled as their rows arrive and their snapshot
            # dropped: all users' snapshots never exist at once (they would set
            # the peak).
            matcher._add_users(stream.users())
        return matcher

    @classmethod
    def from_snapshots(
        cls,
        users: Iterable[UserSnapshot],
        catalog: Catalog | None = None,
        ownership: OwnershipLookup | None = None,
        contexts: Iterable[str] | None = None,
        membership: AccountDirectory | None = None,
    ) -> Matcher:
        """Compile preferences given as plain snapshots (tests, benchmarks, imports)."""
        matcher = cls(catalog, ownership, contexts, membership)
        matcher.replace_users((), users)
        return matcher

    def replace_users(self, user_ids: Iterable[int], snapshots: Iterable[UserSnapshot]) -> None:
        """Drop these users' compiled filters, then compile the snapshots given.

        A user named in ``user_ids`` without a snapshot is removed; a snapshot
        for a user already loaded replaces them.
        """
        with _collector_paused():
            for user_id in user_ids:
                self._drop_user(user_id)
            self._add_users(snapshots)

    def _add_users(self, users: Iterable[UserSnapshot | StreamedUser]) -> None:
        """Compile these users (replacing any already loaded) and log what was wrong."""
        compiling = _Compiling(self.ownership, self.membership)
        for user in users:
            if isinstance(user, UserSnapshot):
                self._drop_user(user.user_id)
                self._add_user(user, compiling)
            else:
                self._drop_user(user[0])
                self._compile_user(user[0], user[1], user[2], compiling)
        compiling.problems.log()

    def refresh_users(self, session: Session, user_ids: Iterable[int]) -> None:
        """Reload these users' preferences from the database; nobody else is touched."""
        ids = sorted(set(user_ids))
        if ids:
            self.replace_users(ids, load_snapshots(session, ids))

    def apply_changes(self, session: Session) -> int:
        """Refresh every user with a change event newer than the last one seen.

        Returns how many users were refreshed.
        """
        due = self._due_users()
        if due:
            self.refresh_users(session, due)
        since = self.last_change_id
        condition = ChangeEvent.id > since
        if self._gaps:
            condition = or_(condition, ChangeEvent.id.in_(sorted(self._gaps)))
        rows = session.execute(
            select(ChangeEvent.id, ChangeEvent.user_id).where(condition).order_by(ChangeEvent.id)
        ).all()
        if not rows:
            self._expire_gaps()
            return len(due)
        seen = {row.id for row in rows}
        newest = max(seen)
        user_ids = {row.user_id for row in rows}
        # Refresh before moving the high-water mark: if reading the rows fails,
        # the same events are read again next time.
        self.refresh_users(session, user_ids)
        for found in seen & self._gaps.keys():
            del self._gaps[found]
        self._note_gaps(seen, since, newest)
        self._expire_gaps()
        self.last_change_id = max(since, newest)
        return len(user_ids | due)

    def follow_directory(self, messages: Iterable[MessageFacts]) -> int:
        """Apply Fedora Accounts' bus messages: the directory forgets the accounts and
        groups they change, and the filters of the users they name whose filing read
        the directory (their group rules) are filed anew. Returns how many users had
        such filters.

        Only the filing reads the directory when a filter is compiled: a filter
        whose hints did not read it (``_Entry.dynamic``) files the same whatever
        the directory says, and rules read it afresh at match time. So nothing is
        read from the database: preferences change through ``apply_changes``.
        """
        changes = directory_changes(messages)
        if not changes:
            return 0
        self.membership.forget(changes.accounts, changes.groups)
        refiled = 0
        for name in sorted(changes.accounts):
            user_id = self._ids_by_name.get(name)
            state = self._users.get(user_id) if user_id is not None else None
            if state is None:
                continue
            dynamic = [entry for entry in _entries_of(state) if entry.dynamic]
            for entry in dynamic:
                self._unfile(entry)
                self._file(entry)
            refiled += bool(dynamic)
        return refiled

    def set_ownership(self, ownership: OwnershipLookup, session: Session | None = None) -> None:
        """Use a new ownership lookup; filters whose hints depend on it are filed again.

        With a session, pending changes are applied first, so the new filing
        covers the latest preferences too.
        """
        if session is not None:
            self.apply_changes(session)
        self.ownership = ownership
        with _collector_paused():
            for state in self._users.values():
                entries = _entries_of(state)
                if not entries:
                    continue
                context = RuleContext(_name_of(state), ownership, self.membership)
                for entry in entries:
                    entry.context = context
                    if entry.dynamic:
                        self._unfile(entry)
                        self._file(entry)

    def _due_users(self) -> set[int]:
        """Users whose pause ended or time-bound rule expired since they were compiled."""
        now = self.clock()
        due: set[int] = set()
        while self._wakes and self._wakes[0][0] <= now:
            due.add(heapq.heappop(self._wakes)[1])
        return due

    def _note_gaps(self, seen: set[int], since: int, newest: int) -> None:
        """Remember the ids after ``since`` and below ``newest`` that were not seen."""
        now = time.monotonic()
        for missing in range(max(since + 1, newest - GAP_WINDOW), newest):
            if missing not in seen:
                self._gaps[missing] = now

    def _expire_gaps(self) -> None:
        if self._gaps:
            cutoff = time.monotonic() - _GAP_SECONDS
            self._gaps = {i: t for i, t in self._gaps.items() if t >= cutoff}

    def _drop_user(self, user_id: int) -> None:
        state = self._users.pop(user_id, None)
        if state is not None:
            name = _name_of(state)
            if self._ids_by_name.get(name) == user_id:
                del self._ids_by_name[name]
            for entry in _entries_of(state):
                self._unfile(entry)

    def _add_user(self, snapshot: UserSnapshot, compiling: _Compiling) -> None:
        """Compile a user's snapshot: what of it is time-bound as it is now, and when
        that changes."""
        now = self.clock()
        wake: dt.datetime | None = None
        contexts: list[StreamedContext] = []
        for preference in snapshot.contexts:
            if not preference.enabled or preference.context not in self.contexts:
                continue
            filters: list[StreamedFilter] = []
            for filter_ in preference.filters:
                rules = filter_.rules
                active = filter_.active
                if active and (filter_.paused_until is not None or compiling.timed(rules)):
                    # Time-bound (rare): what it is now, and when that changes.
                    for moment in _moments(filter_):
                        if moment > now and (wake is None or moment < wake):
                            wake = moment
                    if _paused(filter_, now):
                        active = False
                    else:
                        rules = _unexpired(filter_, now).rules
                # In position order, skipped ones included: the place is the order.
                filters.append((filter_.filter_id, filter_.name, rules, active))
            contexts.append((preference.context, True, filters))
        self._compile_user(snapshot.user_id, snapshot.name, contexts, compiling)
        if wake is not None:
            heapq.heappush(self._wakes, (wake, snapshot.user_id))

    def _compile_user(
        self, user_id: int, name: str, contexts: list[StreamedContext], compiling: _Compiling
    ) -> None:
        """Compile and file one user's filters; nothing of them is time-bound.

        The loop that runs 409,443 times at 100k users: it reads what it can from
        the filter's plan and files the common case (a filing worked out per
        plan) without further calls.
        """
        context = _rule_context(name, self.ownership, self.membership)
        probe: _Probe | None = None
        leads: _Leads = {}
        entries: list[_Entry] = []
        ranks = self._context_rank
        first_slot = user_id * len(ranks)
        plans = compiling.plans
        place = self._place
        if len(contexts) > 1:
            contexts = sorted(contexts, key=_context_of)
        for context_name, enabled, filters in contexts:
            rank = ranks.get(context_name)
            if rank is None or not enabled:
                continue
            slot = first_slot + rank
            for order, (filter_id, filter_name, rules, active) in enumerate(filters):
                if not active or not rules:
                    continue
                known = plans.get(id(rules))
                plan = (known if known is not None else self._known(rules, compiling))[1]
                if isinstance(plan, _Unusable):
                    problem = (
                        compiling.problems.unknown if plan.unknown else compiling.problems.invalid
                    )
                    problem[plan.name].append(name)
                    continue
                filing = plan.filing
                if filing is not None:
                    entry = _Entry(
                        slot,
                        order,
                        plan,
                        context,
                        filter_id,
                        filter_name,
                        filing[0],
                        filing[1],
                        False,
                    )
                    place(entry, plan.group_key)
                else:
                    if probe is None:
                        recording = _Recording(self.ownership, self.membership)
                        probe = recording, _rule_context(name, recording, recording)
                    lead = plan.lead
                    found = None if lead is None else leads.get(id(lead[1]))
                    if found is None:
                        found = self._personal_filing(plan, probe, leads)
                    (key, values), dynamic = found
                    entry = _Entry(
                        slot, order, plan, context, filter_id, filter_name, key, values, dynamic
                    )
                    # ``_entry_group_key`` asked only when it can give one: most
                    # personal filings have rules that read whose filter it is.
                    place(
                        entry,
                        None if dynamic or plan.rules_key is None else _entry_group_key(entry),
                    )
                entries.append(entry)
        # A tuple: a third smaller than the list it was gathered in, 100k times.
        self._users[user_id] = tuple(entries) if entries else name
        self._ids_by_name[name] = user_id

    def _known(self, rules: tuple[RuleSnapshot, ...], compiling: _Compiling) -> _Known:
        """A rule list's plan, compiled once per list (by the identity of its tuple)."""
        known = compiling.plans.get(id(rules))
        if known is None:
            # The tuple is kept with its result so that its id is not reused meanwhile.
            known = compiling.plans[id(rules)] = (rules, self._template(rules, compiling))
        return known

    def _template(
        self, rules: tuple[RuleSnapshot, ...], compiling: _Compiling
    ) -> _Plan | _Unusable:
        """A rule list as evaluated and filed; or why it can't be."""
        compiled_rules: list[_CompiledRule] = []
        hinted: list[tuple[RuleSpec, Mapping[str, Any]]] = []
        kinds = compiling.kinds
        # The rules as a value (the plan's ``rules_key``), or ``None`` when filters
        # with them are never grouped: a rule reads whose filter it is, or an
        # argument is not a plain value. And whether every hint files alike
        # whoever's filter it is. Both read from each name's ``_Kind``, asked once
        # per name rather than once per rule of each list (82,673 at 100k users).
        keys: list[_RuleKey] | None = []
        impersonal_hints = True
        for rule in rules:
            kind = kinds.get(rule.name)
            if kind is None:
                try:
                    kind = kinds[rule.name] = self._kind(self.catalog.get(rule.name))
                except UnknownRule:
                    return _Unusable(rule.name, unknown=True)
            spec, impersonal, indexed, impersonal_hint = kind
            compiled = self._compile_rule(spec, rule)
            if compiled is None:
                return _Unusable(rule.name, unknown=False)
            compiled_rules.append(compiled)
            if keys is not None:
                key = compiled[4]
                # The cache's own key: shared by every filter with the rule, not rebuilt.
                if key is None or not impersonal:
                    keys = None
                else:
                    keys.append(key)
            if indexed and not rule.negated:
                hinted.append((spec, compiled[1]))
                impersonal_hints = impersonal_hints and impersonal_hint
        if len(hinted) > 1:
            # Most selective first (a stable sort keeps the order among equals, which
            # breaks ties): ``_filing`` then stops before the hints that cannot win.
            hinted.sort(key=_hint_rank)
        plan = _Plan(tuple(compiled_rules), tuple(hinted), None if keys is None else tuple(keys))
        if impersonal_hints:
            # Every filter with these rules is filed the same way: work it out once.
            recording, anyone = compiling.probe
            recording.used = False
            try:
                filing, won = _filing_by(plan.hinted, anyone)
            except Exception:  # each filter is filed (and the failure logged) on its own
                return plan
            if not recording.used:
                plan.filing = filing
                plan.proved = _proved(plan.rules, won, filing)
                plan.hinted = ()  # never filed by them again: save the memory
                if plan.rules_key is not None:
                    plan.group_key = _group_key(plan.rules_key, filing)
                return plan
        if len(hinted) == 1 or (len(hinted) > 1 and _hint_rank(hinted[0]) < _hint_rank(hinted[1])):
            plan.lead = hinted[0]
        return plan

    def _kind(self, spec: RuleSpec) -> _Kind:
        """What ``_template`` reads of a rule's spec for every list it is in."""
        hint = spec.hint
        indexed = hint is not None and hint.key in INDEX_KEYS
        return (
            spec,
            self._reads_nobody(spec.function),
            indexed,
            hint is not None and self._reads_nobody(hint.values),
        )

    def _reads_nobody(self, function: Callable[..., Any]) -> bool:
        """Whether a rule or hint function never reads its second argument (the context)."""
        impersonal = self._impersonal
        known = impersonal.get(function)
        if known is None:
            known = impersonal[function] = _impersonal(function)
        return known

    def _compile_rule(self, spec: RuleSpec, rule: RuleSnapshot) -> _CompiledRule | None:
        """The rule as evaluated, or ``None`` if its stored arguments are no longer valid."""
        compiled: _CompiledRule | None
        try:
            # One flat tuple, ``(ref, negated, name, value, name, value, ...)`` by
            # argument name: a third the size of nested pairs, 120k times at 100k users.
            stored = rule.arguments
            if len(stored) == 1:
                # Most rules take one argument: no sort, no chain (the same tuple).
                ((name, value),) = stored.items()
                flat: _RuleKey = (spec.ref, rule.negated, name, value)
            else:
                flat = (
                    spec.ref,
                    rule.negated,
                    *itertools.chain.from_iterable(sorted(stored.items())),
                )
            compiled = self._compiled.get(flat)  # raises TypeError if unhashable
            key: _RuleKey | None = flat
        except TypeError:  # an argument that is not a plain value: compile it alone
            key = compiled = None
        if compiled is not None:
            return compiled
        try:
            arguments = spec.validate(rule.arguments)
        except InvalidArgument:
            return None
        compiled = (spec.function, arguments, rule.negated, spec.name, key)
        if key is not None:
            self._compiled[key] = compiled
        return compiled

    # -- the index -------------------------------------------------------------

    def _file(self, entry: _Entry) -> None:
        """File an entry under its most selective positive hinted rule's values."""
        plan = entry.plan
        if plan.filing is not None:
            entry.key, entry.values = plan.filing
            entry.dynamic = False
            self._place(entry, plan.group_key)
            return
        recording = _Recording(self.ownership, self.membership)
        probe = recording, RuleContext(entry.context.owner, recording, recording)
        (entry.key, entry.values), entry.dynamic = self._personal_filing(plan, probe, {})
        self._place(entry, None if entry.dynamic else _entry_group_key(entry))

    def _personal_filing(self, plan: _Plan, probe: _Probe, leads: _Leads) -> tuple[_Filing, bool]:
        """Where a filter with this plan is filed for the probe's owner, by its own hint
        calls (none for a lead that names its owner, ``IndexHint.names_owner``), and
        whether they read the ownership lookup.

        ``probe`` is the owner's context for hints, reading the lookups through a
        ``_Recording``: one per user while compiling many, rather than one per
        filter. When the plan's lead rule has values, they alone decide (no other
        hint has its rank): that filing is kept in ``leads`` for the user's other
        filters with that lead (a packager's three "my packages" filters ask
        ``package_owned_by_me`` once).
        """
        recording, context = probe
        owner = context.owner
        recording.used = False
        lead = plan.lead
        if lead is None:
            return _filing(plan.hinted, context, owner), recording.used
        hint = lead[0].hint
        if hint is not None and hint.names_owner and hint.owner is None and owner:
            # What ``_filing`` gives for the values ``(owner,)``, without the calls
            # (~100k users' "me" rules at 100k users, each read once per user).
            mine: tuple[_Filing, bool] = ((hint.key, owner), False)
            leads[id(lead[1])] = mine
            return mine
        filing = _filing((lead,), context, owner)
        if filing[0] is None:
            # No values from the lead for this owner: the other hints decide, as
            # ``_filing`` over all of them would (the lead, asked again, would
            # give none again and log its failure twice).
            return _filing(plan.hinted[1:], context, owner), recording.used
        found = leads[id(lead[1])] = filing, recording.used
        return found

    def _place(self, entry: _Entry, group_key: _GroupKey | None) -> None:
        """Put a filed entry (``entry.key``, ``entry.values``) in the index, or in its group."""
        self._filed += 1
        if not entry.values and entry.key is not None:
            self._nowhere += 1
        item = entry if group_key is None else self._join_group(entry, group_key)
        if item is None:
            return  # it joined a group that is filed already
        if entry.key is None:
            self._always.add(item)
            return
        buckets = self._index[entry.key]
        values = entry.values
        # Most filings are one value, held as the bare string (``_each`` written out).
        for value in (values,) if isinstance(values, str) else values:
            bucket = buckets.get(value)
            if bucket is None:
                buckets[value] = item
            elif isinstance(bucket, list):
                bucket.append(item)
            else:
                buckets[value] = [bucket, item]

    def _join_group(self, entry: _Entry, key: _GroupKey) -> _Filed | None:
        """What to file for ``entry``, whose group key is ``key``: itself, or ``None`` if
        it joined a group.

        The first filter with a group key is filed as itself; the second turns
        it into a group filed in its place.
        """
        held = self._groups.get(key)
        if held is None:
            self._groups[key] = entry
            return entry
        if isinstance(held, _Entry):
            group = _SharedFilter(key, held)
            held.group = group
            self._refile(held, group)
            self._groups[key] = held = group
            self._group_count += 1
            self._grouped += 1
        held.add(entry)
        self._grouped += 1
        entry.group = held
        return None

    def _refile(self, old: _Filed, new: _Filed) -> None:
        """Put ``new`` wherever ``old`` is filed (they are filed the same way)."""
        first = new if isinstance(new, _Entry) else old
        assert isinstance(first, _Entry)
        if first.key is None:
            self._always.discard(old)
            self._always.add(new)
            return
        buckets = self._index[first.key]
        for value in _each(first.values):
            bucket = buckets[value]
            if isinstance(bucket, list):
                bucket[bucket.index(old)] = new
            elif bucket is old:
                buckets[value] = new
            else:
                raise ValueError(f"{old!r} is not filed under {first.key}={value!r}")

    def _unfile(self, entry: _Entry) -> None:
        self._filed -= 1
        if not entry.values and entry.key is not None:
            self._nowhere -= 1
        item: _Filed = entry
        group = entry.group
        if group is not None:
            entry.group = None
            group.discard(entry)
            self._grouped -= 1
            if len(group.members) == 1:
                # The last member is filed as itself again, as a fresh load would.
                (lone,) = group.members
                lone.group = None
                self._refile(group, lone)
                self._groups[group.key] = lone
                self._group_count -= 1
                self._grouped -= 1
            if group.members:
                return  # the group or its last member stays filed
            del self._groups[group.key]
            self._group_count -= 1
            item = group
        else:
            key = _entry_group_key(entry)
            if key is not None and self._groups.get(key) is entry:
                del self._groups[key]
        if entry.key is None:
            self._always.discard(item)
            return
        buckets = self._index[entry.key]
        for value in _each(entry.values):
            bucket = buckets.get(value)
            if bucket is item:
                del buckets[value]
            elif isinstance(bucket, list) and item in bucket:
                bucket.remove(item)
                if len(bucket) == 1:
                    buckets[value] = bucket[0]  # alone again, as a fresh load files it

    def stats(self) -> MatcherStats:
        """Counts of users, filters and index buckets (for logs and benchmarks)."""
        # Kept as entries are filed and unfiled (``_place``, ``_join_group``,
        # ``_unfile``); the always set holds few entries and groups.
        always = sum(1 if isinstance(item, _Entry) else len(item.members) for item in self._always)
        return MatcherStats(
            users=len(self._users),
            filters=self._filed,
            indexed=self._filed - always - self._nowhere,
            always=always,
            never=self._nowhere,
            buckets=sum(len(buckets) for buckets in self._index.values()),
            groups=self._group_count,
            grouped=self._grouped,
        )

    def __len__(self) -> int:
        return len(self._users)

    # -- matching --------------------------------------------------------------

    def recipients(self, facts: MessageFacts) -> list[Recipient]:
        """Who gets this message: one entry per (user, context), sorted by user then context.

        Only the filters the index files under the message's keys, and those in
        the always set, are evaluated.
        """
        best: dict[_Slot, _Entry] = {}
        matched: list[_SharedFilter] = []
        self._evaluate(facts, self._candidates(facts), best, matched)
        if self._always:
            self._evaluate(facts, self._always, best, matched)
        names = self._context_names
        if not matched:
            return [_recipient(best[slot], names) for slot in sorted(best)]
        if len(matched) == 1:
            group = matched[0]
            if not best:
                return list(group.answer(names))
            if best.keys().isdisjoint(group.by_slot):
                # A group and a few filters of other users: the group's answer is in
                # slot order already, and recipients order as their slots do (user
                # id, then the context's name, which is how ranks were given), so
                # one sort of a list that is nearly in order gives the answer.
                answer = group.answer(names) + [_recipient(e, names) for e in best.values()]
                answer.sort()
                return answer
        # Groups' recipients are built once per group (``_SharedFilter.recipients``),
        # the few others here.
        answers = {slot: _recipient(entry, names) for slot, entry in best.items()}
        for group in matched:
            _merge(group, best, answers, names)
        return [answers[slot] for slot in sorted(answers)]

    def count_candidates(self, facts: MessageFacts) -> int:
        """How many filters ``recipients`` evaluates for this message (for benchmarks, logs).

        A group of identical filters is evaluated, and counted, once.
        """
        return len(self._candidates(facts)) + len(self._always)

    def _candidates(self, facts: MessageFacts) -> set[_Filed]:
        index = self._index
        found: set[_Filed] = set()
        lookups: Iterable[tuple[str, Iterable[str]]] = facts.index_keys.items()
        if self._by_owner and facts.packages:
            # Filters about someone's packages are filed under that owner: the
            # owners of the message's packages (``index_keys["package"]``) find them.
            owners_of = self.ownership.owners_of
            owners = [owner for package in facts.packages for owner in owners_of(package)]
            lookups = itertools.chain(lookups, ((_BY_OWNER, owners),))
        for key, values in lookups:
            buckets = index.get(key)
            if buckets:
                for value in values:
                    bucket = buckets.get(value)
                    if bucket is None:
                        continue
                    if isinstance(bucket, list):
                        found.update(bucket)
                    else:
                        found.add(bucket)
        return found

    def naive_recipients(self, facts: MessageFacts) -> list[Recipient]:
        """The same answer as ``recipients``, found by evaluating every filter of every user.

        The baseline the index is measured against, and the oracle tests check it with.
        """
        best: dict[_Slot, _Entry] = {}
        for state in self._users.values():
            self._evaluate(facts, _entries_of(state), best, [])
        names = self._context_names
        return [_recipient(best[slot], names) for slot in sorted(best)]

    def explain(self, facts: MessageFacts, snapshot: UserSnapshot) -> list[FilterOutcome]:
        """Every filter of one loaded user, in context and position order, for this message.

        ``snapshot`` is the user's preferences as loaded (the matcher keeps only
        their compiled filters). ``matched`` comes from the very evaluation
        ``recipients`` runs (the filter's compiled entry through ``_evaluate``);
        each rule's ``holds`` calls the same compiled rule the same way, in order,
        and stops at the first that does not hold, as ``recipients`` does. Filters
        the matcher does not compile say why in ``skipped``.
        """
        state = self._users.get(snapshot.user_id)
        if state is None:
            return []
        now = self.clock()
        entries = {entry.filter_id: entry for entry in _entries_of(state)}
        names = self._context_names
        outcomes: list[FilterOutcome] = []
        for preference in sorted(snapshot.contexts, key=lambda p: p.context):
            for position, filter_ in enumerate(preference.filters, start=1):
                entry = entries.get(filter_.filter_id)
                if entry is None or names[entry.slot % len(names)] != preference.context:
                    skipped = _why_skipped(preference, filter_, now, self.contexts)
                    rules = tuple(
                        RuleOutcome(
                            r.name,
                            r.arguments,
                            r.negated,
                            None,
                            expired=r.expires_at is not None and r.expires_at <= now,
                        )
                        for r in filter_.rules
                    )
                    outcomes.append(
                        FilterOutcome(
                            preference.context,
                            filter_.filter_id,
                            filter_.name,
                            position,
                            filter_.active,
                            skipped,
                            False,
                            rules,
                        )
                    )
                    continue
                best: dict[_Slot, _Entry] = {}
                self._evaluate(facts, (entry,), best, [])
                evaluated = iter(self._trace(entry, facts))
                traced: list[RuleOutcome] = []
                for rule in filter_.rules:
                    if rule.expires_at is not None and rule.expires_at <= now:
                        traced.append(
                            RuleOutcome(rule.name, rule.arguments, rule.negated, None, expired=True)
                        )
                        continue
                    holds, raised = next(evaluated)
                    traced.append(
                        RuleOutcome(rule.name, rule.arguments, rule.negated, holds, raised)
                    )
                outcomes.append(
                    FilterOutcome(
                        preference.context,
                        filter_.filter_id,
                        filter_.name,
                        position,
                        filter_.active,
                        "",
                        entry.slot in best,
                        tuple(traced),
                    )
                )
        return outcomes

    def first_matches(self, facts: MessageFacts, user_id: int) -> dict[str, Recipient]:
        """One user's recipients for this message by context: what ``recipients`` gives them."""
        state = self._users.get(user_id)
        if state is None:
            return {}
        best: dict[_Slot, _Entry] = {}
        self._evaluate(facts, _entries_of(state), best, [])
        recipients = (_recipient(entry, self._context_names) for entry in best.values())
        return {recipient.context: recipient for recipient in recipients}

    def _trace(self, entry: _Entry, facts: MessageFacts) -> list[tuple[bool | None, bool]]:
        """``(holds, raised)`` for each compiled rule, in the order ``_evaluate`` runs them;
        after the first that does not hold, ``(None, False)`` (not evaluated there)."""
        results: list[tuple[bool | None, bool]] = []
        stopped = False
        for function, arguments, negated, _name, _key in entry.plan.rules:
            if stopped:
                results.append((None, False))
                continue
            try:
                result = function(facts, entry.context, **arguments)
            except Exception:  # counts as not holding, as in ``_evaluate``
                results.append((False, True))
                stopped = True
                continue
            holds = not result if negated else bool(result)
            results.append((holds, False))
            stopped = not holds
        return results

    def _evaluate(
        self,
        facts: MessageFacts,
        entries: Iterable[_Filed],
        best: dict[_Slot, _Entry],
        matched: list[_SharedFilter],
    ) -> None:
        """Record in ``best`` each (user, context)'s first matching filter among ``entries``;
        groups that match go to ``matched``, to be merged (``_merge``) by the caller."""
        for entry in entries:
            if isinstance(entry, _SharedFilter):
                if self._group_matches(facts, entry):
                    matched.append(entry)
                continue
            slot = entry.slot
            held = best.get(slot)
            if held is not None and held.order < entry.order:
                continue  # an earlier filter of this context already matched
            context = entry.context
            for function, arguments, negated, name, _key in entry.plan.rules:
                try:
                    result = function(facts, context, **arguments)
                except Exception:  # any failure is the filter's miss, never the message's
                    self._rule_failed(name, facts)
                    break
                if negated:
                    if result:
                        break
                elif not result:
                    break
            else:
                best[slot] = entry

    def _group_matches(self, facts: MessageFacts, group: _SharedFilter) -> bool:
        """Evaluate a group's rules once, for all its members."""
        context = group.context
        for function, arguments, negated, name, _key in group.rules:
            try:
                result = function(facts, context, **arguments)
            except Exception:  # any failure is the filter's miss, never the message's
                self._rule_failed(name, facts)
                return False
            if negated:
                if result:
                    return False
            elif not result:
                return False
        return True

    def _rule_failed(self, name: str, facts: MessageFacts) -> None:
        key = (name, facts.id)
        if key in self._failures:
            return
        self._failures[key] = None
        if len(self._failures) > _FAILURES_REMEMBERED:
            self._failures.popitem(last=False)
        log.warning(
            "rule %s raised on message %s; its filters count as not matching",
            name,
            facts.id,
            exc_info=True,
        )


def _why_skipped(
    preference: ContextSnapshot, filter_: FilterSnapshot, now: dt.datetime, offered: Collection[str]
) -> str:
    """Why the matcher compiled no entry for this filter (see ``FilterOutcome.skipped``)."""
    if preference.context not in offered:
        return SKIP_CONTEXT_NOT_OFFERED
    if not preference.enabled:
        return SKIP_CONTEXT_OFF
    if not filter_.active:
        return SKIP_INACTIVE
    if _paused(filter_, now):
        return SKIP_PAUSED
    if not _unexpired(filter_, now).rules:
        return SKIP_NO_RULES
    return SKIP_BROKEN
