"""The account directory: which Fedora accounts exist, and which groups they are in.

fmn names people by their Fedora account. Before it files preferences for an
account (an admin acting for someone, a rule naming a user to follow) it can ask
an ``AccountDirectory``. Two are built in, chosen by ``accounts.provider``:

- ``local`` (the default, ``LocalDirectory``): needs nothing outside fmn. Every
  name with valid Fedora account syntax exists, and so does every user fmn
  already knows; it knows no groups unless it is given some.
- ``fas2`` (``Fas2Directory``): asks a FAS2-compatible account system through
  python-fedora (the optional extra ``fmn[fas]``).

``check_account_name`` is the one syntax check for account names.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .config import Config
from .errors import AccountDirectoryUnavailable, ConfigError, InvalidArgument
from .models import User

__all__ = [
    "ACCOUNT_NAME_RE",
    "AccountDirectory",
    "AccountDirectoryUnavailable",
    "Fas2Directory",
    "LocalDirectory",
    "account_directory",
    "check_account_name",
]

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


class AccountDirectory(Protocol):
    """Who exists, and their groups."""

    def exists(self, name: str) -> bool:
        """Whether this Fedora account exists."""
        ...

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups this account is an approved member of (empty if unknown)."""
        ...


class LocalDirectory:
    """The directory that needs nothing outside fmn.

    ``sessions`` is a sessionmaker (each question is one short read) or a
    ``Session`` (questions read inside the caller's transaction); with neither,
    only the syntax counts. ``accept_any=False`` limits accounts to the users
    fmn knows. ``groups`` maps account names to their groups, for deployments
    (and tests) that know them some other way.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session] | Session | None = None,
        *,
        groups: Mapping[str, Iterable[str]] | None = None,
        accept_any: bool = True,
    ) -> None:
        self._sessions = sessions
        self._groups = {name: frozenset(names) for name, names in (groups or {}).items()}
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

    def _known(self, name: str) -> bool:
        statement = select(User.id).where(User.name == name).limit(1)
        if self._sessions is None:
            return False
        if isinstance(self._sessions, Session):
            return self._sessions.scalar(statement) is not None
        with self._sessions() as session:
            return session.scalar(statement) is not None


class Fas2Directory:
    """A FAS2-compatible account system, through python-fedora's ``AccountSystem``.

    FAS2 (admin.fedoraproject.org/accounts) is retired: Fedora's accounts now
    live in Noggin/FreeIPA. This directory is for deployments that run a
    FAS2-compatible service. It needs the optional extra ``fmn[fas]``
    (python-fedora) and an account to query with (``accounts.fas_username`` and
    ``accounts.fas_password``).

    Answers are remembered for ``cache_seconds`` so a busy front end does not
    query the service for every command. One instance may be shared by threads:
    python-fedora's client is not thread-safe, so calls are serialized.
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
        self._auth_error: type[Exception] = AuthError
        self._failures: tuple[type[Exception], ...] = (
            AppError,
            ServerError,
            requests.RequestException,
        )
        self._client = AccountSystem(
            self.base_url,
            username=username,
            password=password,
            cache_session=False,
            timeout=timeout,
            retries=0,
        )
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size

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

    def _person(self, name: str) -> dict[str, Any]:
        if not _is_valid_name(name):
            return {}
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and now - cached[0] < self._cache_seconds:
                self._cache.move_to_end(name)
                return cached[1]
            person = self._ask(name)
            self._cache[name] = (now, person)
            self._cache.move_to_end(name)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return person

    def _ask(self, name: str) -> dict[str, Any]:
        try:
            answer = self._client.person_by_username(name)
        except self._auth_error as exc:
            raise ConfigError(
                "accounts.fas_username",
                f"{self.base_url} rejected the credentials of accounts.fas_username",
            ) from exc
        except self._failures as exc:
            problem = str(exc) or type(exc).__name__
            raise AccountDirectoryUnavailable(self.base_url, problem) from exc
        except (KeyError, TypeError, AttributeError) as exc:
            # python-fedora indexes the answer directly; a server speaking some
            # other JSON surfaces here.
            raise AccountDirectoryUnavailable(
                self.base_url, f"the answer is not a FAS2 person ({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(answer, Mapping):
            return {}
        person = dict(answer)
        # FAS2 answers success=false (python-fedora returns {}) for unknown people;
        # a person with another username is not this account either.
        return person if person.get("username") == name else {}


def account_directory(
    config: Config, sessions: sessionmaker[Session] | Session | None = None
) -> AccountDirectory:
    """The directory ``accounts.provider`` names; ``sessions`` serves the local one."""
    accounts = config.accounts
    if accounts.provider == "fas2":
        return Fas2Directory(accounts.fas_url, accounts.fas_username, accounts.fas_password)
    return LocalDirectory(sessions)
