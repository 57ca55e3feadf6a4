"""The account directory: which Fedora accounts exist, their groups and their profiles.

fmn names people by their Fedora account, and learns who is who from an
``AccountDirectory``, never from a name a client chose. Three are built in,
chosen by ``accounts.provider``:

- ``local`` (the default, ``LocalDirectory``): needs nothing outside fmn. Every
  name with valid Fedora account syntax exists, and so does every user fmn
  already knows; it knows no groups and no profiles unless it is given some.
- ``fasjson`` (``fmn_core.fasjson.FasjsonDirectory``): Fedora's account API,
  over HTTP with optional GSSAPI.
- ``fas2`` (``Fas2Directory``): asks a FAS2-compatible account system through
  python-fedora (the optional extra ``fmn[fas]``), bounded: no redirect is followed.

The two remote ones share a ``DirectoryBreaker``: after the directory failed to
answer, questions fail at once for ``RETRY_AFTER_SECONDS`` instead of each waiting
for its own timeout on a server that is down or silent.

The functions below are what the rest of fmn asks: ``check_account_name`` (the
one syntax check), ``account_of_login`` (the TUI's uid to an account),
``account_of_irc`` (the bot's services account to an account, through the
profiles that list it), ``is_admin`` and ``directory_changes`` (which bus
messages make cached answers stale).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .config import AccountsConfig, Config
from .db import config_of
from .errors import (
    AccountDirectoryUnavailable,
    AmbiguousChatAccount,
    ConfigError,
    InvalidArgument,
    UnknownAccount,
    UnmappedChatAccount,
)
from .messages import MessageFacts
from .models import User
from .text import irc_fold

__all__ = [
    "ACCOUNT_NAME_RE",
    "MAX_ANSWER_BYTES",
    "RETRY_AFTER_SECONDS",
    "AccountDirectory",
    "AccountDirectoryUnavailable",
    "DirectoryBreaker",
    "DirectoryChanges",
    "Fas2Directory",
    "LocalDirectory",
    "Profile",
    "account_directory",
    "account_of_irc",
    "account_of_login",
    "check_account_name",
    "directory_changes",
    "directory_of",
    "is_admin",
    "parse_chat_nicks",
]

log = logging.getLogger(__name__)

#: Fedora account names: lowercase letters, digits and hyphens, 1 to 32
#: characters, starting and ending with a letter or a digit. Noggin creates new
#: accounts with at least 5 characters; older FAS accounts can be shorter.
ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


def check_account_name(name: str) -> str:
    """Return the name without surrounding blanks, or raise ``InvalidArgument`` saying why."""
    if not isinstance(name, str):
        raise InvalidArgument("A Fedora account name must be text.", argument="user")
    cleaned = name.strip()
    if not cleaned:
        raise InvalidArgument("The Fedora account name is empty; give one.", argument="user")
    if ACCOUNT_NAME_RE.match(cleaned):
        return cleaned
    shown = cleaned[:40] + ("..." if len(cleaned) > 40 else "")
    if len(cleaned) > 32:
        why = "it is longer than 32 characters"
    elif cleaned.lower() != cleaned:
        why = "it has capital letters; account names are lowercase"
    else:
        why = (
            "only lowercase letters, digits and hyphens are allowed, and it must start "
            "and end with a letter or a digit"
        )
    raise InvalidArgument(f"{shown!r} is not a valid Fedora account name: {why}.", argument="user")


def _is_valid_name(name: str) -> bool:
    return isinstance(name, str) and bool(ACCOUNT_NAME_RE.match(name))


#: The largest answer read from a remote directory (a FASJSON page of 40 full users is
#: ~40 kB; a FAS2 person with every membership far less).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: After a remote directory failed to answer, how long questions to it fail at once
#: instead of each waiting for its own timeout (the matcher asks inside the consumer's loop).
RETRY_AFTER_SECONDS = 30.0

_Answer = TypeVar("_Answer")


class DirectoryBreaker:
    """Fails questions to a remote directory at once for a while after one failed.

    A directory that is down, or accepts connections and never answers, would
    otherwise cost every question its full timeout. After a question fails with
    ``AccountDirectoryUnavailable``, the next ones raise the same error at once,
    saying when the directory is asked again; the first question after that
    window goes to the directory again. ``retry_after`` is read at each failure
    (so a test, or the FASJSON module's own setting, can shorten it). Safe to share
    between threads: its state is one tuple, replaced whole.
    """

    def __init__(self, where: str, retry_after: Callable[[], float] | None = None) -> None:
        self.where = where
        self._retry_after = retry_after or (lambda: RETRY_AFTER_SECONDS)
        #: monotonic time before which the directory is not asked again, and why.
        self._down: tuple[float, str] = (0.0, "")

    def __repr__(self) -> str:
        return f"DirectoryBreaker({self.where!r})"

    def ask(self, question: Callable[[], _Answer]) -> _Answer:
        """``question()``, unless the directory failed lately; its failure opens the breaker."""
        until, why = self._down
        if time.monotonic() < until:
            raise AccountDirectoryUnavailable(self.where, why)
        try:
            return question()
        except AccountDirectoryUnavailable as exc:
            wait = self._retry_after()
            self._down = (
                time.monotonic() + wait,
                f"{exc.problem} (not asked again for {wait:.0f}s)",
            )
            raise


# --- profiles ------------------------------------------------------------------------

#: Noggin's ``matrix:/nick`` (no server) means Fedora's own homeserver.
DEFAULT_MATRIX_SERVER = "fedora.im"
#: IRC and Matrix nicks fmn takes from a profile: printable, no spaces, bounded.
_CHAT_NICK_RE = re.compile(r"^[^\s/@:]{1,64}$")
_SERVER_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class Profile:
    """What the directory says about one account: its emails and chat identities.

    ``irc`` holds ``(server, nick)`` pairs, server ``""`` when the profile names
    none (Fedora's default network); ``matrix`` holds Matrix IDs
    (``@nick:server``). Fedora Accounts verifies emails before it stores them.
    """

    name: str
    emails: tuple[str, ...] = ()
    irc: tuple[tuple[str, str], ...] = ()
    matrix: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # Emails and nicks are private data: never in logs or reprs.
        return f"Profile({self.name!r}, {len(self.emails)} emails, {len(self.irc)} irc)"

    def lists_irc(self, account: str, servers: Collection[str]) -> bool:
        """Whether the profile claims this IRC account on one of ``servers`` (or on no server)."""
        wanted = irc_fold(account)
        allowed = {s.lower() for s in servers}
        return any(
            irc_fold(nick) == wanted and (not server or server.lower() in allowed)
            for server, nick in self.irc
        )


def parse_chat_nicks(
    values: Iterable[object],
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Split a profile's ``ircnicks`` into IRC ``(server, nick)`` pairs and Matrix IDs.

    Noggin stores ``irc:/nick``, ``irc://server/nick``, ``matrix:/nick`` and
    ``matrix://server/nick``; older accounts hold a bare IRC nick. Anything
    else (or anything malformed) is skipped, never guessed at.
    """
    irc: list[tuple[str, str]] = []
    matrix: list[str] = []
    for value in values:
        if not isinstance(value, str) or len(value) > 300:
            continue
        scheme, sep, rest = value.strip().partition(":")
        if not sep:
            if _CHAT_NICK_RE.match(scheme):
                irc.append(("", scheme))
            continue
        if rest.startswith("//"):
            server, _, nick = rest[2:].partition("/")
        elif rest.startswith("/"):
            server, nick = "", rest[1:]
        else:
            continue
        if not _CHAT_NICK_RE.match(nick) or (server and not _SERVER_RE.match(server)):
            continue
        if scheme.lower() == "irc":
            irc.append((server.lower(), nick))
        elif scheme.lower() == "matrix":
            matrix.append(f"@{nick}:{(server or DEFAULT_MATRIX_SERVER).lower()}")
    return tuple(irc), tuple(matrix)


class AccountDirectory(Protocol):
    """Who exists, their groups, and their profiles."""

    def exists(self, name: str) -> bool:
        """Whether this Fedora account exists."""
        ...

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups this account is an approved member of (empty if unknown)."""
        ...

    def profile(self, name: str) -> Profile | None:
        """The account's profile; ``None`` if there is no such account."""
        ...

    def profiles_listing_irc(self, account: str) -> list[Profile]:
        """Profiles that may list this IRC nick (``account_of_irc`` checks them exactly)."""
        ...

    def forget(self, accounts: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        """Drop remembered answers about these accounts and groups (the bus says they changed)."""
        ...


class LocalDirectory:
    """The directory that needs nothing outside fmn.

    ``sessions`` is a sessionmaker (each question is one short read) or a
    ``Session`` (questions read inside the caller's transaction); with neither,
    only the syntax counts. ``accept_any=False`` limits accounts to the users
    fmn knows. ``groups`` maps account names to their groups and ``profiles``
    gives profiles, for deployments (and tests) that know them some other way;
    without profiles nobody's IRC account maps to an account here.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session] | Session | None = None,
        *,
        groups: Mapping[str, Iterable[str]] | None = None,
        profiles: Iterable[Profile] = (),
        accept_any: bool = True,
    ) -> None:
        self._sessions = sessions
        self._groups = {name: frozenset(names) for name, names in (groups or {}).items()}
        self._profiles = {p.name: p for p in profiles}
        self.accept_any = accept_any

    def __repr__(self) -> str:
        return f"LocalDirectory(accept_any={self.accept_any!r})"

    def exists(self, name: str) -> bool:
        """A valid name (when ``accept_any``), or a user already in fmn's database."""
        if not isinstance(name, str) or not name:
            return False
        if self.accept_any and _is_valid_name(name):
            return True
        return self._known(name)

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups given to this directory for the account; none otherwise."""
        return self._groups.get(name, frozenset())

    def profile(self, name: str) -> Profile | None:
        """The profile given for the account; an empty one for any other account that exists."""
        given = self._profiles.get(name)
        if given is not None:
            return given
        return Profile(name) if self.exists(name) else None

    def profiles_listing_irc(self, account: str) -> list[Profile]:
        """The given profiles that list this IRC account."""
        wanted = irc_fold(account)
        return [p for p in self._profiles.values() if any(irc_fold(n) == wanted for _, n in p.irc)]

    def forget(self, accounts: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        """Nothing is remembered here."""

    def _known(self, name: str) -> bool:
        statement = select(User.id).where(User.name == name).limit(1)
        if self._sessions is None:
            return False
        if isinstance(self._sessions, Session):
            return self._sessions.scalar(statement) is not None
        with self._sessions() as session:
            return session.scalar(statement) is not None


class Fas2Directory:
    """A FAS2-compatible account system, asked for ``json/person_by_username``.

    FAS2 (admin.fedoraproject.org/accounts) is retired: Fedora's accounts now
    live in Noggin/FreeIPA. This directory is for deployments that run a
    FAS2-compatible service, with an account to query with
    (``accounts.fas_username`` and ``accounts.fas_password``).

    It asks through python-fedora's ``AccountSystem`` (the optional extra
    ``fmn[fas]``), inside ``fmn_core.library_http.bounded_requests``: the client
    posts fmn's password in its form and would follow a redirect with it to
    another host, and reads an answer of any size at any pace. In the block no
    redirect is followed, and an answer ends after ``timeout`` seconds and 4 MiB.

    Answers are remembered for ``cache_seconds`` so a busy front end does not
    query the service for every command. After the service failed to answer,
    questions fail at once for a while (``DirectoryBreaker``). One instance may be
    shared by threads: python-fedora's client is not thread-safe, so each thread
    has its own, and a question is asked outside the cache's lock, so a slow
    answer about one account holds up nobody asking about another.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        cache_seconds: float = 300.0,
        cache_size: int = 4096,
    ) -> None:
        try:
            # Imported here: python-fedora is optional, and only this provider needs it.
            import requests
            from fedora.client import AppError, AuthError, ServerError
            from fedora.client.fas2 import AccountSystem
        except ImportError as exc:
            raise ConfigError(
                "accounts.provider",
                "'fas2' needs python-fedora, which is not installed; install fmn[fas] "
                "or use the 'local' provider",
            ) from exc
        if not username or not password:
            raise ConfigError(
                "accounts.fas_username",
                "the 'fas2' provider needs an account to query with; set "
                "accounts.fas_username and accounts.fas_password",
            )
        if not base_url.lower().startswith(("http://", "https://")):
            raise ConfigError("accounts.fas_url", f"{base_url!r} is not an http(s) URL")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self._auth_error: type[Exception] = AuthError
        self._failures: tuple[type[Exception], ...] = (
            AppError,
            ServerError,
            requests.RequestException,
        )
        self._new_client = functools.partial(
            AccountSystem,
            self.base_url,
            username=username,
            password=password,
            cache_session=False,
            timeout=timeout,
            retries=0,
        )
        self._clients = threading.local()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._breaker = DirectoryBreaker(self.base_url)

    def __repr__(self) -> str:
        return f"Fas2Directory({self.base_url!r})"

    def exists(self, name: str) -> bool:
        """Whether FAS knows this account (a malformed name is never looked up)."""
        return bool(self._person(name))

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups FAS lists as the account's approved memberships."""
        memberships = self._person(name).get("approved_memberships")
        if not isinstance(memberships, list):
            return frozenset()
        return frozenset(
            group["name"]
            for group in memberships
            if isinstance(group, Mapping) and isinstance(group.get("name"), str)
        )

    def profile(self, name: str) -> Profile | None:
        """FAS2's email (verified by FAS) and IRC nick for the account."""
        person = self._person(name)
        if not person:
            return None
        email = person.get("email")
        irc, _ = parse_chat_nicks([person.get("ircnick")])
        return Profile(name, (email,) if isinstance(email, str) and email else (), irc)

    def profiles_listing_irc(self, account: str) -> list[Profile]:
        """FAS2 has no search by IRC nick, so nobody maps here (such deployments set
        ``bot.identity = "services-account"``)."""
        return []

    def forget(self, accounts: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        """Drop the cached people named."""
        with self._lock:
            for name in accounts:
                self._cache.pop(name, None)

    def _person(self, name: str) -> dict[str, Any]:
        if not _is_valid_name(name):
            return {}
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and now - cached[0] < self._cache_seconds:
                self._cache.move_to_end(name)
                return cached[1]
        # Asked without the lock: two threads may ask about one account at once,
        # which costs a question, where holding the lock would stop every lookup.
        person = self._breaker.ask(lambda: self._ask(name))
        with self._lock:
            self._cache[name] = (now, person)
            self._cache.move_to_end(name)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return person

    def _client(self) -> Any:
        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = self._new_client()
        return client

    def _ask(self, name: str) -> dict[str, Any]:
        # Imported here: requests is for the remote directories only.
        from .library_http import bounded_requests

        with bounded_requests(self.timeout, max_bytes=MAX_ANSWER_BYTES, server="FAS2") as limits:
            try:
                answer = self._client().person_by_username(name)
            except self._auth_error as exc:
                raise ConfigError(
                    "accounts.fas_username",
                    f"{self.base_url} rejected the credentials of accounts.fas_username",
                ) from exc
            except self._failures as exc:
                problem = limits.problem or str(exc) or type(exc).__name__
                raise AccountDirectoryUnavailable(self.base_url, problem) from exc
            except (ValueError, RecursionError) as exc:
                # The body is not JSON, or nests deeper than the parser goes.
                raise AccountDirectoryUnavailable(self.base_url, "the answer is not JSON") from exc
            except (KeyError, TypeError, AttributeError) as exc:
                # python-fedora indexes the answer directly; a server speaking some
                # other JSON surfaces here.
                raise AccountDirectoryUnavailable(
                    self.base_url, "the answer is not a FAS2 person"
                ) from exc
        if not isinstance(answer, Mapping):
            return {}
        person = dict(answer)
        # FAS2 answers success=false (python-fedora returns {}) for unknown people;
        # a person with another username is not this account either.
        return person if person.get("username") == name else {}


#: Remote directories, one per configuration in a process: their caches are
#: shared by every thread, and the bus's account messages reach them all.
_remote: dict[AccountsConfig, AccountDirectory] = {}
_remote_lock = threading.Lock()


def account_directory(
    config: Config, sessions: sessionmaker[Session] | Session | None = None
) -> AccountDirectory:
    """The directory ``accounts.provider`` names; ``sessions`` serves the local one.

    A remote directory (``fasjson``, ``fas2``) is built once per process and
    configuration and shared, so its cache and ``forget`` reach every caller.
    """
    accounts = config.accounts
    if accounts.provider == "local":
        return LocalDirectory(sessions)
    with _remote_lock:
        found = _remote.get(accounts)
        if found is None:
            found = _build_remote(accounts)
            _remote[accounts] = found
        return found


def _build_remote(accounts: AccountsConfig) -> AccountDirectory:
    if accounts.provider == "fas2":
        return Fas2Directory(
            accounts.fas_url,
            accounts.fas_username,
            accounts.fas_password,
            timeout=accounts.timeout_seconds,
            cache_seconds=accounts.cache_seconds,
        )
    # Imported here: fasjson builds on this module's names (Profile, the name check).
    from .fasjson import FasjsonDirectory

    return FasjsonDirectory(
        accounts.fasjson_url,
        auth=accounts.fasjson_auth,
        timeout=accounts.timeout_seconds,
        cache_seconds=accounts.cache_seconds,
    )


def directory_of(session: Session) -> AccountDirectory:
    """The directory for work in this session: ``session.info["directory"]`` if set, else
    the one the session's configuration names (the local one reads inside the session)."""
    given = session.info.get("directory")
    if given is not None:
        return given  # type: ignore[no-any-return]
    return account_directory(config_of(session), session)


# --- who is who ----------------------------------------------------------------------


def account_of_login(directory: AccountDirectory, login: str) -> str:
    """The Fedora account a login name (the TUI's uid) is: it must exist in the directory."""
    name = check_account_name(login)
    if not directory.exists(name):
        raise UnknownAccount(name)
    return name


def account_of_irc(directory: AccountDirectory, account: str, servers: Collection[str]) -> str:
    """The one Fedora account whose profile lists this IRC services account.

    ``servers`` are the IRC server names that mean this network in a profile
    (``irc:/nick``, with no server, always does). Nicks compare with IRC case
    folding, so ``Alice_W`` is found as ``irc:/alice_w``. No profile:
    ``UnmappedChatAccount``; more than one: ``AmbiguousChatAccount`` (a
    profile can claim any nick, so fmn refuses rather than pick one).
    """
    claimants = sorted(
        {p.name for p in directory.profiles_listing_irc(account) if p.lists_irc(account, servers)}
    )
    if not claimants:
        raise UnmappedChatAccount(account)
    if len(claimants) > 1:
        raise AmbiguousChatAccount(account, len(claimants))
    return claimants[0]


def is_admin(config: Config, directory: AccountDirectory, name: str) -> bool:
    """Whether this Fedora account is an fmn administrator.

    ``admins`` lists Fedora account names; ``admin_group`` names a Fedora group
    whose members are administrators. ``name`` must already be an account the
    directory vouched for (a login, or an IRC account mapped through profiles).
    """
    if name in config.admins:
        return True
    group = config.admin_group
    return bool(group) and group in directory.groups_of(name)


@dataclass(frozen=True)
class DirectoryChanges:
    """Accounts and groups whose directory answers a bus message made stale."""

    accounts: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.accounts or self.groups)


#: Fedora Accounts' messages (Noggin's and FAS's) about accounts and memberships.
_DIRECTORY_TOPIC_RE = re.compile(
    r"(?:^|\.)fas\.(?:user\.(?:create|update)|role\.update|group\.update"
    r"|group\.member\.(?:add|sponsor|remove|removed))$"
)


def directory_changes(messages: Iterable[MessageFacts]) -> DirectoryChanges:
    """The accounts and groups these messages change (profiles, memberships). Never raises."""
    accounts: set[str] = set()
    groups: set[str] = set()
    for facts in messages:
        topic = facts.topic
        # Nearly every message is about something else: a substring test turns
        # those away at a tenth of the pattern's cost.
        if (
            not isinstance(topic, str)
            or "fas." not in topic
            or not _DIRECTORY_TOPIC_RE.search(topic)
        ):
            continue
        # The schema's names first; the body too, for messages without a schema
        # ({"msg": {"user", "group"}} from Noggin, {"user": {"username"}} from FAS).
        body: Mapping[str, Any] = facts.body if isinstance(facts.body, Mapping) else {}
        msg = body.get("msg")
        inner: Mapping[str, Any] = msg if isinstance(msg, Mapping) else body
        for name in (*facts.usernames, _named(inner.get("user"), "username")):
            if name is not None and _is_valid_name(name):
                accounts.add(name)
        for group in (*facts.groups, _named(inner.get("group"), "name")):
            if isinstance(group, str) and 0 < len(group) <= 64:
                groups.add(group)
    return DirectoryChanges(frozenset(accounts), frozenset(groups))


def _named(value: object, key: str) -> str | None:
    """A name given as a string or as ``{key: name}``."""
    if isinstance(value, Mapping):
        value = value.get(key)
    return value if isinstance(value, str) else None
