"""Who owns which package: fed from dist-git, stored in the database, cached in memory.

Fedora's dist-git (Pagure) publishes every repository's maintainers as one JSON
document, ``https://src.fedoraproject.org/extras/pagure_owner_alias.json``::

    {"rpms": {"kernel": ["jforbes", "@kernel-maint", ...], ...},
     "modules": {...}, "container": {...}, "flatpaks": {...}, ...}

Each list holds usernames and, prefixed with ``@``, group names. An
``OwnershipProvider`` turns such a source into ``(namespace, package, owner)``
triples; ``refresh_ownership`` makes the ``package_owners`` table match them
(inside the caller's transaction), and ``OwnershipCache.load`` reads the table
into the lookup rules use (``packages_of``/``owners_of``).

Rules compare against ``MessageFacts.packages``, which carry bare rpm names, so
the lookup answers for the ``rpms`` namespace unless asked for another one.
``affects_ownership`` tells the daemon which bus messages change the source, so
it can refresh without waiting for the next scheduled run.
"""

from __future__ import annotations

import itertools
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from .config import Config
from .db import is_postgres
from .errors import ConfigError, OwnershipSourceError
from .messages import MessageFacts
from .models import PackageOwner
from .text import has_control

__all__ = [
    "DEFAULT_NAMESPACE",
    "DistGitOwnership",
    "OwnershipCache",
    "OwnershipProvider",
    "OwnershipQueries",
    "OwnershipSourceError",
    "Triple",
    "affects_ownership",
    "ownership_provider",
    "parse_owner_alias",
    "refresh_ownership",
]

log = logging.getLogger(__name__)

#: The namespace whose names ``MessageFacts.packages`` carry.
DEFAULT_NAMESPACE = "rpms"

#: ``(namespace, package, owner)``; owner is a username or ``@group``.
Triple = tuple[str, str, str]

#: Column sizes of ``package_owners`` (models.PackageOwner).
_MAX_NAMESPACE = 64
_MAX_NAME = 255
#: The real document is a few MB; anything far larger is not it.
_MAX_BYTES = 256 * 1024 * 1024
#: Rows deleted per statement, well under every backend's parameter limit.
_CHUNK = 500


class OwnershipProvider(Protocol):
    """Where package ownership comes from."""

    def fetch(self) -> Iterable[Triple]:
        """Every ``(namespace, package, owner)``; raises ``OwnershipSourceError`` if it can't."""
        ...


class DistGitOwnership:
    """Reads dist-git's owner-alias JSON from an http(s) URL, a file:// URL or a file path."""

    def __init__(self, source: str, *, timeout: float = 60.0) -> None:
        if not source.strip():
            raise ConfigError("ownership.source", "is empty; give a URL or a file path")
        scheme, separator, _ = source.strip().partition("://")
        if separator and scheme.lower() not in ("http", "https", "file") and "/" not in scheme:
            # Read as a path, ftp://host/x would fail as "no such file", which misleads.
            raise ConfigError(
                "ownership.source",
                f"{scheme}:// is not read; give an http(s):// URL, a file:// URL or a file path",
            )
        self.source = source.strip()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"DistGitOwnership({self.source!r})"

    @property
    def is_url(self) -> bool:
        """Whether the source is fetched over HTTP rather than read from disk."""
        return self.source.lower().startswith(("http://", "https://"))

    def fetch(self) -> list[Triple]:
        """Read, parse and check the whole document; nothing partial is ever returned."""
        raw = self._read()
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OwnershipSourceError(self.source, f"is not valid JSON ({exc})") from exc
        return parse_owner_alias(document, self.source)

    def _read(self) -> bytes:
        if not self.is_url:
            source = self.source
            if source.lower().startswith("file://"):
                source = urllib.request.url2pathname(urllib.parse.urlsplit(source).path)
            path = Path(source).expanduser()
            try:
                with path.open("rb") as handle:
                    return self._limited(handle.read(_MAX_BYTES + 1))
            except OSError as exc:
                raise OwnershipSourceError(
                    self.source, f"cannot be read ({exc.strerror or exc})"
                ) from exc
        request = urllib.request.Request(
            self.source, headers={"Accept": "application/json", "User-Agent": "fmn"}
        )
        try:
            # Only http(s) gets here (``is_url``): urlopen's file:// and ftp:// stay unused.
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return self._limited(response.read(_MAX_BYTES + 1))
        except urllib.error.HTTPError as exc:
            raise OwnershipSourceError(
                self.source, f"the server answered HTTP {exc.code} {exc.reason}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OwnershipSourceError(self.source, f"cannot be fetched ({reason})") from exc

    def _limited(self, data: bytes) -> bytes:
        if len(data) > _MAX_BYTES:
            raise OwnershipSourceError(
                self.source, f"is larger than {_MAX_BYTES // (1024 * 1024)} MB"
            )
        return data


def parse_owner_alias(document: Any, source: str = "(document)") -> list[Triple]:
    """Check the owner-alias shape and flatten it into sorted, unique triples.

    A wrong shape is an error naming where it is (``rpms/kernel``): it means the
    format changed, and refreshing from it would wipe the table. Single names
    too long for the database are skipped with a warning instead: one odd entry
    must not stop every refresh.
    """
    if not isinstance(document, Mapping):
        raise OwnershipSourceError(
            source, f"expected a JSON object of namespaces, got {_kind(document)}"
        )
    triples: set[Triple] = set()
    for namespace, packages in document.items():
        if not isinstance(packages, Mapping):
            raise OwnershipSourceError(
                source, f"{namespace}: expected an object of packages, got {_kind(packages)}"
            )
        if len(namespace) > _MAX_NAMESPACE:
            log.warning("ownership: skipping namespace %.80s...: name too long", namespace)
            continue
        for package, owners in packages.items():
            if not isinstance(owners, list):
                raise OwnershipSourceError(
                    source,
                    f"{namespace}/{package}: expected a list of owner names, got {_kind(owners)}",
                )
            for owner in owners:
                if not isinstance(owner, str) or not owner.strip():
                    raise OwnershipSourceError(
                        source,
                        f"{namespace}/{package}: owner names must be non-empty text, "
                        f"got {_kind(owner)}",
                    )
                if not package or len(package) > _MAX_NAME or len(owner) > _MAX_NAME:
                    log.warning(
                        "ownership: skipping %s/%.80s -> %.80s: name empty or too long",
                        namespace,
                        package,
                        owner,
                    )
                    continue
                triples.add((namespace, package, owner.strip()))
    return sorted(triples)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def ownership_provider(config: Config) -> DistGitOwnership | None:
    """The configured provider, or ``None`` when ``ownership.source`` is empty (disabled)."""
    source = config.ownership.source
    return DistGitOwnership(source) if source.strip() else None


def refresh_ownership(session: Session, provider: OwnershipProvider) -> int:
    """Make ``package_owners`` hold exactly what the provider says; return rows changed.

    The provider is read completely before the table is touched, so a source
    that fails halfway raises with the table as it was. The change is a diff
    (delete what went away, insert what is new) in the caller's transaction:
    rows that didn't change keep their ids, and readers of other transactions
    never see a half-written table. Returns added plus removed rows; 0 means the
    table already matched.
    """
    wanted = set(provider.fetch())
    current: dict[Triple, int] = {
        (row.namespace, row.package, row.owner): row.id
        for row in session.execute(
            select(
                PackageOwner.id, PackageOwner.namespace, PackageOwner.package, PackageOwner.owner
            )
        )
    }
    removed = [row_id for triple, row_id in current.items() if triple not in wanted]
    added = sorted(wanted.difference(current))
    for start in range(0, len(removed), _CHUNK):
        session.execute(
            delete(PackageOwner).where(PackageOwner.id.in_(removed[start : start + _CHUNK]))
        )
    if added:
        session.execute(
            insert(PackageOwner),
            [{"namespace": ns, "package": package, "owner": owner} for ns, package, owner in added],
        )
    log.info(
        "ownership refreshed: %d rows added, %d removed, %d kept",
        len(added),
        len(removed),
        len(current) - len(removed),
    )
    return len(added) + len(removed)


#: What a package maps to in ``OwnershipCache``: its single owner's name (most
#: packages have one), a few names as a tuple (a third of a frozenset's size),
#: or more as a frozenset.
_Names = str | tuple[str, ...] | frozenset[str]
#: What an owner's entry holds while the cache is built (names gathered, or a set).
_Held = TypeVar("_Held")
#: What a package's entry holds while the cache is built.
_Owners = TypeVar("_Owners")
#: Up to this many names are kept as a tuple.
_FEW = 4
#: A package's owners while ``OwnershipCache._from_owner_runs`` reads them: as
#: ``_Names``, or a list once they are more than ``_FEW``.
_Gathering = _Names | list[str]
_NOBODY: frozenset[str] = frozenset()
#: Rows fetched per round trip by ``OwnershipCache.load``: the whole table is
#: never held as driver rows at once.
_LOAD_BATCH = 5000


class OwnershipCache:
    """An in-memory ``OwnershipLookup``: owners' packages and packages' owners.

    Immutable once built, so one cache may be shared by threads; a refresh builds
    a new one and swaps it in.

    Built compactly because the daemon holds one for its whole life and the real
    table has a few hundred thousand rows: each distinct name is one shared
    string (rows from the database carry a fresh copy each) and the maps are
    per namespace (no key tuples). A package's owners are its single owner's
    name or a tuple when few, and ``owners_of`` makes the frozenset when asked.
    An owner's packages stay a frozenset: rules ask ``packages_of`` while
    matching, and it answers the stored set without building anything.
    """

    __slots__ = ("_by_owner", "_by_package", "_count")

    def __init__(self, triples: Iterable[Triple] = ()) -> None:
        # namespace -> name -> the single other name, or a list of them while building.
        by_owner: dict[str, dict[str, str | list[str]]] = {}
        by_package: dict[str, dict[str, str | list[str]]] = {}
        seen: dict[str, str] = {}
        share = seen.setdefault
        count = 0
        # The maps of the row before's namespace: most rows share one namespace.
        current: str | None = None
        owners_map: dict[str, str | list[str]] = {}
        packages_map: dict[str, str | list[str]] = {}
        # ``_add`` written out twice: a function call per row and map costs a
        # fifth of the load at a few hundred thousand rows.
        for namespace, package, owner in triples:
            package = share(package, package)
            owner = share(owner, owner)
            if namespace != current:
                current = namespace
                owners_map, packages_map = _maps_of(namespace, by_owner, by_package, share)
            found = owners_map.get(owner)
            if found is None:
                owners_map[owner] = package
            elif isinstance(found, str):
                owners_map[owner] = [found, package]
            else:
                found.append(package)
            found = packages_map.get(package)
            if found is None:
                packages_map[package] = owner
            elif isinstance(found, str):
                packages_map[package] = [found, owner]
            else:
                found.append(owner)
            count += 1
        self._by_owner = {
            ns: {
                key: frozenset((value,)) if isinstance(value, str) else frozenset(value)
                for key, value in names.items()
            }
            for ns, names in by_owner.items()
        }
        self._by_package = {ns: _compact(names) for ns, names in by_package.items()}
        self._count = count

    @classmethod
    def load(cls, session: Session) -> OwnershipCache:
        """Read the whole ``package_owners`` table."""
        if is_postgres(session):
            # The driver's own tuples from a server-side cursor, a batch at a
            # time: SQLAlchemy's streamed result costs a Python call per row.
            return cls._from_owner_runs(itertools.chain.from_iterable(_driver_batches(session)))
        # Plain column tuples, streamed: no ORM entities for a table this size.
        rows = session.connection().execute(
            select(PackageOwner.namespace, PackageOwner.package, PackageOwner.owner),
            execution_options={"yield_per": _LOAD_BATCH},
        )
        return cls(rows)

    @classmethod
    def _from_owner_runs(cls, triples: Iterable[Triple]) -> OwnershipCache:
        """What ``__init__`` builds, for less when ``triples`` come sorted by
        namespace and owner: each owner's packages are then one run of rows, made
        a frozenset when the run ends, rather than gathered in a map and converted
        at the end. (Any order gives the same cache: a run of an owner seen
        before is added to their set.)
        """
        by_owner: dict[str, dict[str, frozenset[str]]] = {}
        by_package: dict[str, dict[str, _Gathering]] = {}
        seen: dict[str, str] = {}
        share = seen.setdefault
        count = 0
        current: str | None = None
        current_owner: str | None = None
        run: list[str] = []
        owners_map: dict[str, frozenset[str]] = {}
        packages_map: dict[str, _Gathering] = {}
        # A package's owners are held as ``_compact`` keeps them from the start (a
        # name, then a tuple of up to ``_FEW``), not gathered in lists and copied
        # into a second map at the end (a pass over 130k packages at 100k users);
        # only the few with more owners are gathered in a list, made a set at the end.
        crowded: list[tuple[dict[str, _Gathering], str]] = []
        for namespace, package, owner in triples:
            package = share(package, package)
            if owner != current_owner or namespace != current:
                if run:
                    assert current_owner is not None
                    _end_run(owners_map, current_owner, run)
                    run = []
                owner = current_owner = share(owner, owner)
                if namespace != current:
                    current = namespace
                    owners_map, packages_map = _maps_of(namespace, by_owner, by_package, share)
            else:
                owner = current_owner
            run.append(package)
            found = packages_map.get(package)
            if found is None:
                packages_map[package] = owner
            elif isinstance(found, str):
                packages_map[package] = (found, owner)
            elif isinstance(found, tuple):
                if len(found) < _FEW:
                    packages_map[package] = (*found, owner)
                else:
                    packages_map[package] = [*found, owner]
                    crowded.append((packages_map, package))
            else:  # a list: no frozenset is made before the end
                cast(list[str], found).append(owner)
            count += 1
        if run:
            assert current_owner is not None
            _end_run(owners_map, current_owner, run)
        for names, package in crowded:
            names[package] = frozenset(names[package])
        cache = cls.__new__(cls)
        cache._by_owner = by_owner
        # Every list was made a frozenset just above.
        cache._by_package = cast(dict[str, dict[str, _Names]], by_package)
        cache._count = count
        return cache

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"OwnershipCache({self._count} entries)"

    def packages_of(self, owner: str, namespace: str = DEFAULT_NAMESPACE) -> frozenset[str]:
        """Packages owned by a user, or by a group given as ``@group``."""
        packages = self._by_owner.get(namespace)
        return _NOBODY if packages is None else packages.get(owner, _NOBODY)

    def owners_of(self, package: str, namespace: str = DEFAULT_NAMESPACE) -> frozenset[str]:
        """Owners of a package: usernames and ``@group`` names."""
        owners = self._by_package.get(namespace)
        found = None if owners is None else owners.get(package)
        if found is None:
            return _NOBODY
        if isinstance(found, frozenset):
            return found
        if isinstance(found, str):
            return frozenset((found,))
        return frozenset(found)


class OwnershipQueries:
    """The ownership lookup for one answer: each owner and package read when first asked.

    ``explain`` compiles one user's filters and evaluates them on one message,
    which asks about a few owners and packages; a preview evaluates one filter on
    up to a thousand stored messages. ``OwnershipCache.load`` would read the whole
    table for either (219,095 rows at Fedora's size: seconds of CPU on every "why"
    and every preview); this reads the rows asked about, one indexed query per
    owner or package, or per few hundred packages read ahead (``read_owners``),
    and keeps each answer for the rest of its life. It answers as an
    ``OwnershipCache`` loaded from the same rows in the same transaction does.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._packages: dict[tuple[str, str], frozenset[str]] = {}
        self._owners: dict[tuple[str, str], frozenset[str]] = {}

    def packages_of(self, owner: str, namespace: str = DEFAULT_NAMESPACE) -> frozenset[str]:
        """Packages owned by a user, or by a group given as ``@group``."""
        return self._read(
            self._packages, PackageOwner.package, PackageOwner.owner, namespace, owner
        )

    def owners_of(self, package: str, namespace: str = DEFAULT_NAMESPACE) -> frozenset[str]:
        """Owners of a package: usernames and ``@group`` names."""
        return self._read(
            self._owners, PackageOwner.owner, PackageOwner.package, namespace, package
        )

    def read_owners(self, packages: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> None:
        """Read ahead the owners of every package not asked about yet, a chunk per query.

        The matcher asks ``owners_of`` for each package of each message when filters
        are filed under owners; a preview names its messages' packages here first, so
        that a thousand messages cost a few queries rather than one per package.
        """
        known = self._owners
        wanted = sorted({p for p in packages if (namespace, p) not in known and _askable(p)})
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            found: dict[str, set[str]] = {package: set() for package in chunk}
            rows = self._session.execute(
                select(PackageOwner.package, PackageOwner.owner).where(
                    PackageOwner.namespace == namespace, PackageOwner.package.in_(chunk)
                )
            )
            for package, owner in rows:
                found[package].add(owner)
            for package, owners in found.items():
                known[(namespace, package)] = frozenset(owners)

    def _read(
        self,
        known: dict[tuple[str, str], frozenset[str]],
        wanted: InstrumentedAttribute[str],
        by: InstrumentedAttribute[str],
        namespace: str,
        name: str,
    ) -> frozenset[str]:
        key = (namespace, name)
        found = known.get(key)
        if found is None:
            if not _askable(name):
                return _NOBODY
            query = select(wanted).where(PackageOwner.namespace == namespace, by == name)
            found = known[key] = frozenset(self._session.scalars(query))
        return found


def _askable(name: str) -> bool:
    """Whether a name from a message can be asked of the database at all.

    Package and owner names come from bus messages, and a control character or a
    lone surrogate there would fail in the driver (SQLite can't encode a surrogate,
    PostgreSQL refuses NUL), taking a whole preview or explanation with it. No
    owner row holds such a name: it owns nothing, and nobody owns it.
    """
    return not has_control(name)


def _maps_of(
    namespace: str,
    by_owner: dict[str, dict[str, _Held]],
    by_package: dict[str, dict[str, _Owners]],
    share: Callable[[str, str], str],
) -> tuple[dict[str, _Held], dict[str, _Owners]]:
    """The owners' and the packages' maps of ``namespace``, made at its first row (the
    loading loops ask only when the namespace changes from the row before's)."""
    owners = by_owner.get(namespace)
    if owners is None:
        namespace = share(namespace, namespace)
        owners = by_owner[namespace] = {}
        by_package[namespace] = {}
    return owners, by_package[namespace]


def _end_run(owners: dict[str, frozenset[str]], owner: str, run: list[str]) -> None:
    found = owners.get(owner)
    owners[owner] = frozenset(run) if found is None else found | frozenset(run)


#: The table as ``OwnershipCache.load`` reads it on PostgreSQL: by owner, so that
#: each owner's rows are one run (``_from_owner_runs``), in the order of
#: ``ix_package_owners_namespace_owner``, which gives the first rows at once where a
#: sort of the whole table kept the start waiting. Any order that keeps equal names
#: together will do.
_OWNERS_SQL = "SELECT namespace, package, owner FROM package_owners ORDER BY namespace, owner"


def _driver_batches(session: Session) -> Iterator[list[tuple[Any, ...]]]:
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor(name=f"fmn_owners_{next(_cursor_numbers)}", binary=True) as cursor:
        cursor.execute(_OWNERS_SQL)
        while rows := cursor.fetchmany(_LOAD_BATCH):
            yield rows


_cursor_numbers = itertools.count()


def _compact(names: dict[str, str | list[str]]) -> dict[str, _Names]:
    return {
        key: value
        if isinstance(value, str)
        else tuple(value)
        if len(value) <= _FEW
        else frozenset(value)
        for key, value in names.items()
    }


#: pagure topics (after ``pagure.``) that change who may commit to a repository.
_ACL_EVENTS = frozenset(
    (
        "project.new",
        "project.deleted",
        "project.owner.updated",
        "project.user.added",
        "project.user.removed",
        "project.user.access.updated",
        "project.group.added",
        "project.group.removed",
        "project.group.access.updated",
    )
)
#: dist-git publishes under Fedora's own prefixes (pagure.io uses io.pagure.*).
_DISTGIT_PREFIXES = ("org.fedoraproject.prod.pagure.", "org.fedoraproject.stg.pagure.")
_DISTGIT_NAMESPACES = frozenset(("rpms", "modules", "container", "flatpaks", "tests"))


def affects_ownership(facts: MessageFacts) -> bool:
    """Whether this bus message changes a dist-git repository's maintainers.

    True for dist-git's project creation, deletion and ACL changes (users or
    groups added, removed or given other access) on a package namespace; the
    daemon refreshes ownership when it sees one. Never raises.
    """
    topic = facts.topic
    prefix = next((p for p in _DISTGIT_PREFIXES if topic.startswith(p)), None)
    if prefix is None or topic[len(prefix) :] not in _ACL_EVENTS:
        return False
    project = facts.body.get("project") if isinstance(facts.body, Mapping) else None
    namespace = project.get("namespace") if isinstance(project, Mapping) else None
    return isinstance(namespace, str) and namespace in _DISTGIT_NAMESPACES
