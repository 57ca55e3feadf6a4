"""Users' preferences as plain, frozen copies: what the matcher compiles.

``load_snapshots`` reads them with three column queries per chunk of users
rather than through ORM objects: 100k users' rows load in seconds instead of
minutes, and nothing is left to lazy-load. ``stream_snapshots`` reads every
user with two queries and hands out one user at a time, so that a caller
compiling them as they come never holds all users' snapshots at once; the
daemon's start-up reads the same stream as plain tuples (``SnapshotStream.users``,
``StreamedUser``), without making snapshots at all. Tests and benchmarks build
snapshots directly, without a database.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import json
import queue
import re
import threading
from array import array
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Select, Text, case, cast, select
from sqlalchemy.orm import Session

from .db import is_postgres, run_all_on_driver
from .models import Filter, Preference, Rule, User

__all__ = [
    "ContextSnapshot",
    "FilterSnapshot",
    "RuleSnapshot",
    "SnapshotStream",
    "StreamedContext",
    "StreamedFilter",
    "StreamedUser",
    "UserSnapshot",
    "load_snapshots",
    "slot_setters",
    "stream_snapshots",
]

#: Ids are fetched in chunks this size (well under every backend's parameter limit).
_CHUNK = 1000
#: Rows fetched from the database at a time while loading.
_STREAM = 10_000


@dataclass(frozen=True, slots=True)
class RuleSnapshot:
    """A rule as stored: its catalog name, arguments, and whether it is negated."""

    name: str
    arguments: Mapping[str, Any]
    negated: bool = False
    #: A time-bound rule: the matcher drops it from this time on.
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class FilterSnapshot:
    """A filter as stored; its place in ``ContextSnapshot.filters`` is its position."""

    filter_id: int
    name: str
    rules: tuple[RuleSnapshot, ...]
    active: bool = True
    #: A paused filter: the matcher skips it until this time.
    paused_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ContextSnapshot:
    """One user's preference for one context, with its filters in position order."""

    context: str
    filters: tuple[FilterSnapshot, ...]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """Everything the matcher needs about one user: a plain copy of their rows."""

    user_id: int
    name: str
    contexts: tuple[ContextSnapshot, ...]


#: A filter as ``SnapshotStream.users`` gives it: its id, name, rule list (shared with
#: every filter that has the same list) and whether it is active (as the driver
#: gives it: a bool, or SQLite's 0 or 1). Nothing of it is time-bound: no pause,
#: no rule that expires.
StreamedFilter = tuple[int, str, tuple[RuleSnapshot, ...], bool | int]
#: A preference as streamed: its context, whether it is enabled, and its filters in
#: position order.
StreamedContext = tuple[str, bool, list[StreamedFilter]]
#: A user as streamed: their id, name and preferences. Plain tuples rather than
#: snapshots: at 100k users, making 423,401 ``FilterSnapshot``\ s and their
#: preferences' and users' frozen dataclasses cost the load more than half a
#: CPU-second, for objects the matcher reads once and drops.
StreamedUser = tuple[int, str, list[StreamedContext]]


def load_snapshots(session: Session, user_ids: Collection[int] | None = None) -> list[UserSnapshot]:
    """Read users' preferences (all, or these ids'): three queries per chunk of users.

    Users without any preference rows get no snapshot.
    """
    # Millions of long-lived objects and no garbage cycles: without a pause the
    # cyclic collector rescans all of them again and again while they are built.
    paused = gc.isenabled()
    gc.disable()
    try:
        if user_ids is None:
            return _load_chunk(session, None)
        ids = sorted(set(user_ids))
        snapshots: list[UserSnapshot] = []
        for start in range(0, len(ids), _CHUNK):
            snapshots.extend(_load_chunk(session, ids[start : start + _CHUNK]))
        return snapshots
    finally:
        if paused:
            gc.enable()


#: The refresh's three queries on PostgreSQL, for a few users' ids (``= ANY``): the
#: same texts every time, so psycopg prepares them.
_FEW_RULES = (
    "SELECT r.filter_id, r.name, r.arguments::text, r.negated, r.expires_at "
    "FROM rules r JOIN filters f ON f.id = r.filter_id "
    "JOIN preferences p ON p.id = f.preference_id WHERE p.user_id = ANY(%s::integer[]) "
    "ORDER BY r.filter_id, r.position, r.id"
)
_FEW_FILTERS = (
    "SELECT f.id, f.preference_id, f.name, f.active, f.paused_until "
    "FROM filters f JOIN preferences p ON p.id = f.preference_id "
    "WHERE p.user_id = ANY(%s::integer[]) "
    "ORDER BY f.preference_id, f.position, f.id"
)
_FEW_PREFERENCES = (
    "SELECT p.id, p.user_id, p.context, p.enabled, u.name "
    "FROM preferences p JOIN users u ON u.id = p.user_id WHERE p.user_id = ANY(%s::integer[]) "
    "ORDER BY p.user_id, p.context"
)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A driver's timestamp as the ORM column gives it (``models.UTCDateTime``)."""
    return None if value is None else value.astimezone(dt.UTC)


def _load_chunk(session: Session, ids: list[int] | None) -> list[UserSnapshot]:
    if ids is not None and is_postgres(session):
        # The refresh between ingest batches reads a few users: through the
        # ORM, building and compiling the three statements cost the client
        # more than the database takes to answer them. The three go in one
        # round trip: the ingest writer waits for this one between batches.
        rule_rows, filter_rows, preference_rows = run_all_on_driver(
            session, [(_FEW_RULES, [ids]), (_FEW_FILTERS, [ids]), (_FEW_PREFERENCES, [ids])]
        )
        return _build(
            ((f, n, a, g, _utc(e)) for f, n, a, g, e in rule_rows),
            ((i, p, n, a, _utc(u)) for i, p, n, a, u in filter_rows),
            preference_rows,
        )
    preferences = select(
        Preference.id, Preference.user_id, Preference.context, Preference.enabled, User.name
    ).join(User, User.id == Preference.user_id)
    filters = select(
        Filter.id, Filter.preference_id, Filter.name, Filter.active, Filter.paused_until
    ).join(Preference, Preference.id == Filter.preference_id)
    # The arguments as their stored JSON text: thousands of users store the same
    # few (``app=bodhi``), so each distinct text is parsed once and its snapshot
    # shared, which saves most of the loading time and memory at 100k users.
    rules = (
        select(
            Rule.filter_id,
            Rule.name,
            cast(Rule.arguments, Text).label("arguments"),
            Rule.negated,
            Rule.expires_at,
        )
        .join(Filter, Filter.id == Rule.filter_id)
        .join(Preference, Preference.id == Filter.preference_id)
    )
    if ids is not None:
        preferences = preferences.where(Preference.user_id.in_(ids))
        filters = filters.where(Preference.user_id.in_(ids))
        rules = rules.where(Preference.user_id.in_(ids))
    # Rows stream in slices (``_STREAM``) rather than all at once: at 100k users
    # the rows alone would take hundreds of MB while the snapshots are built. A
    # chunk of ``_CHUNK`` users is read at once: streaming (a server-side cursor
    # on PostgreSQL, three more round trips per query) would cost the few users
    # a bus message names, refreshed between batches, more than their rows.
    streamed: dict[str, Any] = {"yield_per": _STREAM} if ids is None else {}
    return _build(
        session.execute(
            rules.order_by(Rule.filter_id, Rule.position, Rule.id), execution_options=streamed
        ),
        session.execute(
            filters.order_by(Filter.preference_id, Filter.position, Filter.id),
            execution_options=streamed,
        ),
        session.execute(
            preferences.order_by(Preference.user_id, Preference.context),
            execution_options=streamed,
        ),
    )


def _build(
    rules: Iterable[Sequence[Any]],
    filters: Iterable[Sequence[Any]],
    preferences: Iterable[Sequence[Any]],
) -> list[UserSnapshot]:
    """Snapshots from the rows of the three queries, each read once, in this order."""
    rules_of: defaultdict[int, list[RuleSnapshot]] = defaultdict(list)
    shared: dict[tuple[str, str | None, bool, dt.datetime | None], RuleSnapshot] = {}
    for filter_id, rule_name, arguments, negated, expires_at in rules:
        key = (rule_name, arguments, bool(negated), expires_at)
        snapshot = shared.get(key)
        if snapshot is None:
            parsed = json.loads(arguments) if arguments else None
            snapshot = shared[key] = RuleSnapshot(rule_name, dict(parsed or {}), key[2], expires_at)
        rules_of[filter_id].append(snapshot)
    filters_of: defaultdict[int, list[FilterSnapshot]] = defaultdict(list)
    for filter_id, preference_id, filter_name, active, paused_until in filters:
        filters_of[preference_id].append(
            FilterSnapshot(
                filter_id,
                filter_name,
                tuple(rules_of.get(filter_id, ())),
                bool(active),
                paused_until,
            )
        )
    names: dict[int, str] = {}
    contexts_of: defaultdict[int, list[ContextSnapshot]] = defaultdict(list)
    for preference_id, user_id, context, enabled, user_name in preferences:
        names[user_id] = user_name
        contexts_of[user_id].append(
            ContextSnapshot(context, tuple(filters_of.get(preference_id, ())), bool(enabled))
        )
    return [UserSnapshot(uid, names[uid], tuple(contexts)) for uid, contexts in contexts_of.items()]


def stream_snapshots(session: Session) -> Iterator[UserSnapshot]:
    """Every user's preferences, one user at a time (users without preferences get none).

    Two queries: every rule once, ordered by filter, then every preference with
    its filters, ordered by user. Identical rules share one ``RuleSnapshot`` and
    identical rule lists one tuple, so what is held while streaming is one
    shared tuple per filter id; each user's snapshot is built when their rows
    arrive, and can be dropped once the caller has used it. Users with anything
    time-bound (a paused filter, a rule that expires) are read afterwards with
    ``load_snapshots``, which reads the times themselves.
    """
    with SnapshotStream(session) as stream:
        yield from stream


class SnapshotStream:
    """Every user's preferences being read: ``stream_snapshots``, with its queries started early.

    With ``concurrent`` on PostgreSQL, both queries start as soon as the stream
    is made, each on a connection of its own with a thread fetching its first
    rows, so the database sorts them while the caller does other work (and
    sorts the preferences while the rules are compiled). Both connections read the
    session's snapshot of the database (exported with ``pg_export_snapshot``):
    they see one state, the one the session's transaction saw when the stream
    was made. The session must hold no uncommitted writes (the other
    connections would not see them) and its transaction must stay open until
    the stream is closed. Elsewhere (SQLite, a session bound to a connection)
    the queries run one after the other on the session's connection when
    iterated. Iterate once; close (or leave the ``with`` block) in any case.
    """

    def __init__(self, session: Session, *, concurrent: bool = False) -> None:
        self._session = session
        self._side: list[_SideRows] = []
        bind = session.get_bind()
        if concurrent and isinstance(bind, Engine) and bind.dialect.name == "postgresql":
            exported = session.connection().exec_driver_sql("SELECT pg_export_snapshot()")
            snapshot = str(exported.scalar_one())
            if not _SNAPSHOT_ID.fullmatch(snapshot):
                raise ValueError(f"unexpected snapshot id from PostgreSQL: {snapshot!r}")
            try:
                for sql in (_GROUPED_RULES, _literal_sql(bind, _preferences_query())):
                    self._side.append(_SideRows(bind, snapshot, sql))
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> SnapshotStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[UserSnapshot]:
        for user in self.users():
            yield user if isinstance(user, UserSnapshot) else _user_snapshot(user)

    def users(self) -> Iterator[StreamedUser | UserSnapshot]:
        """Every user, as their rows arrive: a ``StreamedUser`` each, in user id order;
        then, as snapshots, the users with anything time-bound (read by
        ``load_snapshots``)."""
        if self._side:
            rules, preferences = (side.rows() for side in self._side)
            return _streamed(self._session, _grouped_rule_lists(rules), preferences)
        _tune_for_whole_reads(self._session)
        connection = self._session.connection()
        if connection.dialect.name == "postgresql":
            lists = _grouped_rule_lists(_driver_rows(self._session, _GROUPED_RULES))
        else:
            lists = _rule_lists(
                _driver_rows(self._session, _literal_sql(connection.engine, _rules_query()))
            )
        preferences = _driver_rows(
            self._session, _literal_sql(connection.engine, _preferences_query())
        )
        return _streamed(self._session, lists, preferences)

    def close(self) -> None:
        """Wait for the threads still starting a query and give the connections back."""
        side, self._side = self._side, []
        for rows in side:
            rows.close()


def _tune_for_whole_reads(session: Session) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        for statement in _WHOLE_READS:
            connection.exec_driver_sql(statement)


#: For the transaction only: both queries read every row through a cursor,
#: which the planner otherwise plans for a fast first tenth (a slower whole:
#: 1.1 s instead of 2.3 s for the rules at 100k users), and sort hundreds of
#: thousands of rows, in memory rather than in temporary files where that fits.
#: No parallel workers: ``_GROUPED_RULES`` relies on its rows' order.
_WHOLE_READS = (
    "SET LOCAL cursor_tuple_fraction = 1",
    "SET LOCAL work_mem = '64MB'",
    "SET LOCAL max_parallel_workers_per_gather = 0",
)
#: What ``pg_export_snapshot`` returns (it is spliced into ``SET TRANSACTION SNAPSHOT``).
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


def _rules_query() -> Select[Any]:
    return select(
        Rule.filter_id,
        Rule.name,
        cast(Rule.arguments, Text),
        Rule.negated,
        case((Rule.expires_at.is_(None), False), else_=True),
    ).order_by(Rule.filter_id, Rule.position, Rule.id)


#: The rules on PostgreSQL, grouped there: one row per distinct rule list (82,673 for
#: 747,302 rules of 423,401 filters at 100k users) with the ids of the filters that
#: have it, rather than a row per rule for Python to group. A list is one text, its
#: rules in order, each as its name (a JSON string), its arguments (JSON) and
#: whether it is negated; JSON text never holds a raw control character, so the
#: separators cannot occur inside a part. Lists with a time-bound rule are apart
#: (``timed``): those filters are left to ``load_snapshots``.
#:
#: Each filter's rules reach ``string_agg`` in the sorted subquery's order (one
#: sort of every rule; an ``ORDER BY`` inside the aggregate would sort each of the
#: 423,401 groups again, half as much database time as the whole query). Nothing
#: between the sort and the aggregate reorders rows: no join, and no parallel
#: workers, whose partial aggregates could be combined in any order
#: (``_WHOLE_READS`` turns them off for the transaction). Should a later PostgreSQL
#: reorder them anyway, no answer changes: a filter's rules are a conjunction, each
#: failure a miss, so the order only decides which lists are found to be the same.
_GROUPED_RULES = (
    "SELECT rules, timed, array_agg(filter_id) FROM ("
    "SELECT filter_id, string_agg(to_json(name)::text || E'\\x1f' "
    "|| coalesce(arguments::text, '') || E'\\x1f' || negated::text, E'\\x1e') AS rules, "
    "bool_or(expires_at IS NOT NULL) AS timed "
    "FROM (SELECT filter_id, name, arguments, negated, expires_at FROM rules "
    "ORDER BY filter_id, position, id) AS ordered "
    "GROUP BY filter_id) AS lists "
    "GROUP BY rules, timed"
)
#: The separators of ``_GROUPED_RULES``: between rules, and between a rule's parts.
_RULE_SEPARATOR = "\x1e"
_PART_SEPARATOR = "\x1f"


def _preferences_query() -> Select[Any]:
    return (
        select(
            Preference.user_id,
            User.name,
            Preference.context,
            Preference.enabled,
            Filter.id,
            Filter.name,
            Filter.active,
            case((Filter.paused_until.is_(None), False), else_=True),
        )
        .join(User, User.id == Preference.user_id)
        .outerjoin(Filter, Filter.preference_id == Preference.id)
        .order_by(Preference.user_id, Preference.context, Filter.position, Filter.id)
    )


#: Rows in the first slice, fetched by a side connection's thread: a few, as
#: the database sorts the whole result for the first row; more would be held,
#: fragmenting the memory of the objects compiled meanwhile.
_FIRST = 100


class _SideRows:
    """One query's rows on a connection of its own, its first slice fetched by a thread.

    The thread checks a connection out of the engine's pool, joins the exported
    snapshot, and fetches the first slice: the database sorts the rows then,
    and the driver waits for it without holding the interpreter lock, so that
    wait overlaps the caller's work. The reader fetches the rest itself (rows
    fetched by a thread while the reader compiles would cost interpreter-lock
    hand-offs for no gain, the database then only sends them). The connection
    is given back, its transaction rolled back, when the rows run out, on an
    error, or on ``close``.
    """

    def __init__(self, engine: Engine, snapshot: str, sql: str) -> None:
        self._first: queue.Queue[Sequence[Sequence[Any]] | BaseException] = queue.Queue(1)
        self._connection: Connection | None = None
        self._cursor: Any = None
        self._thread = threading.Thread(
            target=self._start, args=(engine, snapshot, sql), name="fmn-load-rows", daemon=True
        )
        self._thread.start()

    def _start(self, engine: Engine, snapshot: str, sql: str) -> None:
        try:
            connection = self._connection = engine.connect()
            connection.execution_options(isolation_level="REPEATABLE READ")
            connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            for statement in _WHOLE_READS:
                connection.exec_driver_sql(statement)
            driver = connection.connection.driver_connection
            assert driver is not None
            # Binary: integer arrays and the rest decoded in C, no text parsed.
            self._cursor = driver.cursor(name=f"fmn_load_{next(_cursor_numbers)}", binary=True)
            self._cursor.execute(sql)
            self._first.put(self._cursor.fetchmany(_FIRST))
        except BaseException as exc:  # handed to the reader, who raises it
            self._first.put(exc)

    def rows(self) -> Iterator[Sequence[Any]]:
        """The rows, in the query's order; raises what the thread met."""
        first = self._first.get()
        self._thread.join()
        if isinstance(first, BaseException):
            raise first
        rows = first
        try:
            while rows:
                yield from rows
                rows = self._cursor.fetchmany(_STREAM)
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the thread, then close the cursor and give the connection back."""
        self._thread.join()
        cursor, self._cursor = self._cursor, None
        connection, self._connection = self._connection, None
        try:
            if cursor is not None:
                cursor.close()
        finally:
            if connection is not None:
                connection.close()


def _literal_sql(engine: Engine, statement: Select[Any]) -> str:
    return str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))


def _streamed(
    session: Session,
    rule_lists: tuple[_RuleLists, set[int]],
    rows: Iterator[Sequence[Any]],
) -> Iterator[StreamedUser | UserSnapshot]:
    rules_of, timed = rule_lists
    del rule_lists
    # The sealed table (or dict) read here, not through a method: a call per filter
    # (423,401 at 100k users) cost more than the subscript.
    lists, table, base, by_id = rules_of.lists, rules_of.table, rules_of.base, rules_of.by_id
    size = len(table) if table is not None else 0
    # Each row brings its own copy of the context's and the filter's name; the
    # compiled filters keep them, so equal ones are shared (a few contexts, and
    # users name their filters alike): tens of MB at 100k users.
    strings: dict[str, str] = {}
    share = strings.setdefault
    deferred: list[int] = []
    user_id: int | None = None
    name = ""
    contexts: list[StreamedContext] = []
    context: str | None = None
    filters: list[StreamedFilter] = []
    skip = False
    no_rules: tuple[RuleSnapshot, ...] = ()
    for uid, user_name, ctx, ctx_enabled, filter_id, filter_name, active, paused in rows:
        if uid != user_id or ctx != context:
            if uid != user_id:
                if user_id is not None:
                    if skip:
                        deferred.append(user_id)
                    else:
                        yield user_id, name, contexts
                    contexts = []
                user_id, name, skip = uid, user_name, False
            context = share(ctx, ctx)
            filters = []
            contexts.append((context, bool(ctx_enabled), filters))
        if filter_id is None or skip:
            continue
        if paused or filter_id in timed:
            skip = True
            continue
        if table is not None:
            at = filter_id - base
            number = table[at] if 0 <= at < size else -1
        else:
            assert by_id is not None
            number = by_id.get(filter_id, -1)
        rules = no_rules if number < 0 else lists[number]
        filters.append((filter_id, share(filter_name, filter_name), rules, active))
    if user_id is not None:
        if skip:
            deferred.append(user_id)
        else:
            yield user_id, name, contexts
    del rules_of, lists, table, by_id
    if deferred:
        yield from load_snapshots(session, deferred)


def _user_snapshot(user: StreamedUser) -> UserSnapshot:
    """A streamed user as a snapshot (``stream_snapshots``)."""
    user_id, name, contexts = user
    return UserSnapshot(
        user_id,
        name,
        tuple(
            ContextSnapshot(
                context,
                tuple(
                    FilterSnapshot(filter_id, filter_name, rules, bool(active))
                    for filter_id, filter_name, rules, active in filters
                ),
                enabled,
            )
            for context, enabled, filters in contexts
        ),
    )


def _driver_rows(session: Session, sql: str) -> Iterator[Sequence[Any]]:
    """The statement's rows as the database driver gives them, streamed.

    A million rows pass through here at start-up: plain driver tuples cost a
    fraction of result rows, and on PostgreSQL a server-side cursor keeps only
    ``_STREAM`` of them in memory at a time. The statement binds no values
    (they are rendered into the SQL).
    """
    connection = session.connection()
    driver = connection.connection.driver_connection
    assert driver is not None
    if connection.dialect.name == "postgresql":
        cursor = driver.cursor(name=f"fmn_load_{next(_cursor_numbers)}", binary=True)
        cursor.itersize = _STREAM
    else:
        cursor = driver.cursor()
    try:
        cursor.execute(sql)
        # In slices: a server-side cursor's own iterator is a Python call per row.
        while rows := cursor.fetchmany(_STREAM):
            yield from rows
    finally:
        cursor.close()


_cursor_numbers = itertools.count()


class _RuleLists:
    """Each filter's rule list (one shared tuple per distinct list), by filter id.

    Filled in ascending filter id order. Kept as arrays of machine integers, not
    a dict: at 100k users a dict would hold 423,401 integer objects for the ids,
    freed only after the last user is compiled, and the compiled filters
    allocated meanwhile would leave that memory scattered (tens of MB the
    process keeps). Ids usually come from one sequence, so a table indexed by id
    is used when they are dense enough; otherwise a dict. ``_streamed`` reads
    them itself, without a call per filter (which cost more than the lookup).
    """

    #: A table spans at most this many slots per filter with rules.
    _SPARSE = 4

    def __init__(self) -> None:
        self.lists: list[tuple[RuleSnapshot, ...]] = []
        self._ids = array("q")
        self._numbers = array("l")
        #: Once sealed: each filter's number in ``lists`` at ``filter id - base``, -1
        #: where no filter has rules; or, with sparse ids, ``by_id`` instead.
        self.table: array[int] | None = None
        self.base = 0
        self.by_id: dict[int, int] | None = None

    def add(self, filter_id: int, number: int) -> None:
        """File the ``number``-th of ``lists`` for this filter."""
        self._ids.append(filter_id)
        self._numbers.append(number)

    def add_many(self, filter_ids: Sequence[int], number: int) -> None:
        """File the ``number``-th of ``lists`` for each of these filters (in any order)."""
        self._ids.extend(filter_ids)
        self._numbers.extend(itertools.repeat(number, len(filter_ids)))

    def seal(self) -> None:
        """Build the lookup once every filter is added."""
        ids, numbers = self._ids, self._numbers
        low, high = (min(ids), max(ids)) if ids else (0, 0)
        if ids and high - low < self._SPARSE * len(ids) + 1024:
            self.base = low
            table = self.table = array("l", [-1]) * (high - low + 1)
            for filter_id, number in zip(ids, numbers, strict=True):
                table[filter_id - low] = number
        else:
            self.by_id = dict(zip(ids, numbers, strict=True))
        self._ids = array("q")
        self._numbers = array("l")


_decode_json = json.JSONDecoder().raw_decode


def _json(text: str) -> Any:
    """``json.loads(text)`` at a third of its cost on the stored arguments' texts.

    ``json.loads`` checks its argument's type and a byte-order mark, and matches
    trailing whitespace with a regular expression before it reads: a microsecond
    for each of 82,730 distinct rules at 100k users. Texts that are not one JSON
    value from their first character to their last are left to ``json.loads``,
    which reads them, or refuses them, as it would have.
    """
    try:
        value, end = _decode_json(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _rule_snapshot(name: str, arguments: Mapping[str, Any], negated: bool) -> RuleSnapshot:
    """``RuleSnapshot(name, arguments, negated)`` for 0.3 µs instead of 0.55.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; its slots' own descriptors are quicker (82,730
    distinct rules at 100k users).
    """
    snapshot = _new_rule(RuleSnapshot)
    _set_rule_name(snapshot, name)
    _set_rule_arguments(snapshot, arguments)
    _set_rule_negated(snapshot, negated)
    _set_rule_expires_at(snapshot, None)
    return snapshot


def slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """The ``__set__`` of each named slot of ``cls``: they set a frozen dataclass's
    fields without the ``object.__setattr__`` its ``__init__`` goes through."""
    slots = vars(cls)
    return tuple(slots[name].__set__ for name in names)


_new_rule = object.__new__
_set_rule_name, _set_rule_arguments, _set_rule_negated, _set_rule_expires_at = slot_setters(
    RuleSnapshot, "name", "arguments", "negated", "expires_at"
)


def _grouped_rule_lists(rows: Iterator[Sequence[Any]]) -> tuple[_RuleLists, set[int]]:
    """``_rule_lists`` from the rows of ``_GROUPED_RULES``: one per distinct rule list."""
    numbered: dict[str, RuleSnapshot] = {}
    rules_of = _RuleLists()
    lists = rules_of.lists
    timed: set[int] = set()
    for text, is_timed, filter_ids in rows:
        if is_timed:
            timed.update(filter_ids)
            continue
        snapshots: list[RuleSnapshot] = []
        for rule in text.split(_RULE_SEPARATOR):
            # Each distinct rule is parsed once (thousands of users store ``app=bodhi``).
            snapshot = numbered.get(rule)
            if snapshot is None:
                name, arguments, negated = rule.split(_PART_SEPARATOR)
                parsed = _json(arguments) if arguments else None
                # A JSON string: its bare text unless it has an escape.
                name = json.loads(name) if "\\" in name else name[1:-1]
                snapshot = numbered[rule] = _rule_snapshot(
                    name, dict(parsed or {}), negated == "true"
                )
            snapshots.append(snapshot)
        rules_of.add_many(filter_ids, len(lists))
        lists.append(tuple(snapshots))
    rules_of.seal()
    return rules_of, timed


def _rule_lists(rows: Iterator[Sequence[Any]]) -> tuple[_RuleLists, set[int]]:
    """Every filter's rules (shared tuples of shared snapshots), from the rules' rows in
    filter order, and the filters with a rule that expires (left to ``load_snapshots``)."""
    # Thousands of users store the same few arguments (``app=bodhi``) and the
    # same rule lists: each distinct text is parsed once, each list stored once.
    numbered: dict[tuple[str, str | None, bool], int] = {}
    snapshots: list[RuleSnapshot] = []
    lists: dict[tuple[int, ...], int] = {}
    rules_of = _RuleLists()
    add = rules_of.add
    timed: set[int] = set()
    current: int | None = None
    numbers: list[int] = []

    def close(filter_id: int) -> None:
        key = tuple(numbers)
        number = lists.get(key)
        if number is None:
            number = lists[key] = len(rules_of.lists)
            rules_of.lists.append(tuple(snapshots[n] for n in key))
        add(filter_id, number)

    for filter_id, name, arguments, negated, expires in rows:
        if filter_id != current:
            if current is not None:
                close(current)
            current, numbers = filter_id, []
        if expires:
            timed.add(filter_id)
            continue
        signature = (name, arguments, bool(negated))
        number = numbered.get(signature)
        if number is None:
            parsed = _json(arguments) if arguments else None
            number = numbered[signature] = len(snapshots)
            snapshots.append(RuleSnapshot(name, dict(parsed or {}), signature[2]))
        numbers.append(number)
    if current is not None:
        close(current)
    rules_of.seal()
    return rules_of, timed
