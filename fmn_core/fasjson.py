"""FASJSON, Fedora's account API, as an account directory.

FASJSON (``https://fasjson.fedoraproject.org/``) serves Fedora Accounts
(Noggin/FreeIPA) as JSON. fmn reads four endpoints of its v1 API::

    GET /v1/users/{name}/                  {"result": {user}}            404: none
    GET /v1/users/{name}/groups/           {"result": [{"groupname"}], "page": {...}}
    GET /v1/groups/{group}/members/        {"result": [{"username"}], "page": {...}}
    GET /v1/search/users/?ircnick=...      {"result": [{user}], "page": {...}}

Lists are paged: ``page_size``/``page_number`` in the query, and ``page``
(``page_number``, ``total_pages``) in the answer. A user carries ``emails``
(verified by Fedora Accounts) and ``ircnicks`` (``irc:/nick``,
``matrix://fedora.im/nick``); a private profile comes without its nicks.

Why plain HTTP with requests rather than ``fasjson-client``: fasjson-client
builds its client from the service's OpenAPI document through bravado and
insists on Kerberos, so it can't talk to a test server on loopback nor to a
FASJSON-compatible service behind other access control; FMN 3.x also talks
plain HTTP (httpx with SPNEGO). requests is already installed with Apprise,
and ``requests-gssapi`` (the extra ``fmn[fasjson]``) adds Kerberos when
``accounts.fasjson_auth = "gssapi"``.

Answers are read within bounds (``fmn_core.library_http.bounded_requests``, as
push sends and FAS2 are): no redirect is followed, an answer is at most
``MAX_ANSWER_BYTES`` and must arrive whole within ``timeout`` seconds, headers
included, and a page holding more than the ``PAGE_SIZE`` items asked for is
refused. Whatever can't be read (an answer cut short, stalled, dripping, too
large, broken gzip, not JSON) counts as FASJSON not answering.

Answers are cached for ``cache_seconds`` and dropped early by ``forget`` (the
daemon calls it for Fedora Accounts' bus messages). When FASJSON can't answer,
a remembered answer, however old, is used rather than failing; with none,
``AccountDirectoryUnavailable``. After a failure, questions fail at once for
``RETRY_AFTER_SECONDS`` (or use what is remembered) instead of each waiting.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import requests

from . import accounts
from .accounts import (
    ACCOUNT_NAME_RE,
    MAX_ANSWER_BYTES,
    DirectoryBreaker,
    Profile,
    parse_chat_nicks,
)
from .errors import AccountDirectoryUnavailable, ConfigError
from .library_http import bounded_requests
from .text import irc_fold

__all__ = ["FasjsonDirectory"]

log = logging.getLogger(__name__)

#: Pages followed for one list; a group larger than this is cut short (and logged).
MAX_PAGES = 200
#: FASJSON's largest page for searches (40) serves every list; a longer page is refused.
PAGE_SIZE = 40
#: FASJSON refuses substring searches shorter than this.
MIN_SEARCH = 3
#: After FASJSON failed to answer, how long questions fail at once instead of each
#: waiting for its own timeout (``accounts.DirectoryBreaker``); FASJSON's own, so it
#: can be set apart from FAS2's.
RETRY_AFTER_SECONDS = accounts.RETRY_AFTER_SECONDS

_MISSING = object()
#: Fedora group names: like account names, and some older ones hold "_" or ".".
_GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class _Cache:
    """Answers by key with their time; old entries stay for use when FASJSON is down."""

    def __init__(self, seconds: float, size: int = 20000) -> None:
        self.seconds = seconds
        self.size = size
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], tuple[float, Any]] = {}

    def fresh(self, key: tuple[str, str]) -> Any:
        with self._lock:
            found = self._items.get(key)
        if found is None or time.monotonic() - found[0] >= self.seconds:
            return _MISSING
        return found[1]

    def stale(self, key: tuple[str, str]) -> Any:
        with self._lock:
            found = self._items.get(key)
        return _MISSING if found is None else found[1]

    def put(self, key: tuple[str, str], value: Any) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                # Drop the oldest tenth; simpler than an LRU and rarely reached.
                for old in sorted(self._items, key=lambda k: self._items[k][0])[: self.size // 10]:
                    del self._items[old]
            self._items[key] = (time.monotonic(), value)

    def drop(self, kind: str, name: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == kind and name in (None, k[1])]:
                del self._items[key]


class FasjsonDirectory:
    """Fedora Accounts through FASJSON's v1 HTTP API; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: str = "gssapi",
        timeout: float = 10.0,
        cache_seconds: float = 900.0,
    ) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            raise ConfigError("accounts.fasjson_url", f"{base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/") + "/"
        self.api_url = self.base_url + "v1/"
        self.timeout = timeout
        self._auth = _auth(auth)
        # requests' Session is not documented as thread-safe: one per thread.
        self._local = threading.local()
        self._cache = _Cache(cache_seconds)
        self._breaker = DirectoryBreaker(self.base_url, lambda: RETRY_AFTER_SECONDS)

    def __repr__(self) -> str:
        return f"FasjsonDirectory({self.base_url!r})"

    # -- the AccountDirectory interface -------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether FASJSON has this (active) account; malformed names are never sent."""
        return self._user(name) is not None

    def profile(self, name: str) -> Profile | None:
        """The account's emails, IRC accounts and Matrix IDs; ``None`` if there is no account."""
        user = self._user(name)
        return None if user is None else _profile(user)

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups the account is a member of (empty for an unknown account)."""
        if not _valid(name):
            return frozenset()
        return self._cached(("groups", name), lambda: self._groups(name))  # type: ignore[no-any-return]

    def members_of(self, group: str) -> frozenset[str]:
        """The members of a group (empty for an unknown group)."""
        if not _valid_group(group):
            return frozenset()
        return self._cached(("members", group), lambda: self._members(group))  # type: ignore[no-any-return]

    def profiles_listing_irc(self, account: str) -> list[Profile]:
        """Profiles whose ``ircnicks`` contain this nick (``account_of_irc`` checks exactly)."""
        if not isinstance(account, str) or not account or len(account) > 64:
            return []
        key = ("ircnick", irc_fold(account))
        return self._cached(key, lambda: self._search_irc(account))  # type: ignore[no-any-return]

    def forget(self, accounts: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        """Drop what is remembered about these accounts and groups, and every nick search.

        A profile change may add or remove any nick, so nick searches go whole.
        """
        accounts = list(accounts)
        for name in accounts:
            self._cache.drop("user", name)
            self._cache.drop("groups", name)
        for group in groups:
            self._cache.drop("members", group)
        if accounts:
            self._cache.drop("ircnick")

    # -- requests ----------------------------------------------------------------

    def _user(self, name: str) -> dict[str, Any] | None:
        if not _valid(name):
            return None
        return self._cached(("user", name), lambda: self._fetch_user(name))  # type: ignore[no-any-return]

    def _fetch_user(self, name: str) -> dict[str, Any] | None:
        answer = self._get(f"users/{_quote(name)}/", missing_ok=True)
        if answer is None:
            return None
        user = answer.get("result")
        if not isinstance(user, Mapping) or user.get("username") != name:
            raise self._unreadable(f"users/{name}/", "the answer is not this user")
        if user.get("locked") is True:
            return None  # a locked account can't act, and gets nothing new
        return dict(user)

    def _groups(self, name: str) -> frozenset[str]:
        return frozenset(
            g["groupname"]
            for g in self._pages(f"users/{_quote(name)}/groups/", {}, missing_ok=True)
            if isinstance(g, Mapping) and isinstance(g.get("groupname"), str)
        )

    def _members(self, group: str) -> frozenset[str]:
        return frozenset(
            m["username"]
            for m in self._pages(f"groups/{_quote(group)}/members/", {}, missing_ok=True)
            if isinstance(m, Mapping) and isinstance(m.get("username"), str)
        )

    def _search_irc(self, account: str) -> list[Profile]:
        # ircnick is a substring search (irc:/alice is found by "alice"); FASJSON
        # wants 3 characters for that, so shorter nicks are asked for exactly.
        if len(account) >= MIN_SEARCH:
            queries: list[dict[str, str]] = [{"ircnick": account}]
        else:
            queries = [{"ircnick__exact": f"irc:/{account}"}, {"ircnick__exact": account}]
        found: dict[str, Profile] = {}
        for query in queries:
            for user in self._pages("search/users/", query):
                if (
                    isinstance(user, Mapping)
                    and isinstance(user.get("username"), str)
                    and user.get("locked") is not True
                ):
                    found[user["username"]] = _profile(user)
        return list(found.values())

    def _pages(
        self, path: str, query: Mapping[str, str], *, missing_ok: bool = False
    ) -> Iterator[Any]:
        """Every item of a paged list, following ``page.total_pages``; none for a 404
        with ``missing_ok`` (an unknown user's groups, an unknown group's members)."""
        number = 1
        while True:
            answer = self._get(
                path,
                {**query, "page_size": PAGE_SIZE, "page_number": number},
                missing_ok=missing_ok,
            )
            if answer is None:
                return
            items = answer.get("result")
            if not isinstance(items, list):
                raise self._unreadable(path, "the answer has no result list")
            if len(items) > PAGE_SIZE:
                # fmn asked for PAGE_SIZE: a longer page (each of MAX_PAGES of them)
                # would make one lookup hold millions of names.
                raise self._unreadable(path, f"a page of more than the {PAGE_SIZE} items asked for")
            yield from items
            page = answer.get("page")
            total = page.get("total_pages") if isinstance(page, Mapping) else None
            if not isinstance(total, int) or number >= total:
                return
            if number >= MAX_PAGES:
                log.warning(
                    "%s%s: more than %d pages; the rest is ignored", self.api_url, path, MAX_PAGES
                )
                return
            number += 1

    def _get(
        self, path: str, query: Mapping[str, Any] | None = None, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        with bounded_requests(self.timeout, max_bytes=MAX_ANSWER_BYTES, server="FASJSON") as limits:
            try:
                response = self._session().get(
                    self.api_url + path,
                    params=dict(query or {}),
                    timeout=self.timeout,
                    headers={"Accept": "application/json"},
                )
            except requests.RequestException as exc:
                raise self._unreadable(path, limits.problem or type(exc).__name__) from exc
        status = response.status_code
        if status == 404 and missing_ok:
            return None
        if status in (401, 403):
            raise ConfigError(
                "accounts.fasjson_auth",
                f"{self.base_url} refused fmn ({status}); check "
                "fmn's Kerberos credentials (keytab) or accounts.fasjson_auth",
            )
        if status != 200:
            raise AccountDirectoryUnavailable(self.base_url, f"{path}: HTTP {status}")
        try:
            answer = json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise self._unreadable(path, "the answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise self._unreadable(path, "the answer is not a JSON object")
        return answer

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth
            session.trust_env = False  # no proxies or netrc picked up from the environment
            self._local.session = session
        return session

    def _unreadable(self, path: str, why: str) -> AccountDirectoryUnavailable:
        return AccountDirectoryUnavailable(self.base_url, f"{path}: {why}")

    def _cached(self, key: tuple[str, str], ask: Any) -> Any:
        found = self._cache.fresh(key)
        if found is not _MISSING:
            return found
        try:
            value = self._breaker.ask(ask)
        except AccountDirectoryUnavailable as exc:
            old = self._cache.stale(key)
            if old is _MISSING:
                raise
            log.warning("%s; using an older answer for %s %s", exc, key[0], key[1])
            return old
        self._cache.put(key, value)
        return value


def _auth(kind: str) -> Any:
    if kind == "none":
        return None
    if kind != "gssapi":
        raise ConfigError("accounts.fasjson_auth", f"{kind!r} is not one of ['gssapi', 'none']")
    try:
        # Imported here: Kerberos is optional, and only this mode needs it.
        gssapi = importlib.import_module("requests_gssapi")
    except ImportError as exc:
        raise ConfigError(
            "accounts.fasjson_auth",
            "'gssapi' needs requests-gssapi, which is not installed; install fmn[fasjson] "
            "(and give fmn a Kerberos keytab), or use 'none' for a service that needs no login",
        ) from exc
    return gssapi.HTTPSPNEGOAuth(mutual_authentication=gssapi.OPTIONAL)


def _valid(name: object) -> bool:
    return isinstance(name, str) and bool(ACCOUNT_NAME_RE.match(name))


def _valid_group(name: object) -> bool:
    return isinstance(name, str) and bool(_GROUP_RE.match(name))


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _profile(user: Mapping[str, Any]) -> Profile:
    emails = user.get("emails")
    nicks = user.get("ircnicks")
    irc, matrix = parse_chat_nicks(nicks if isinstance(nicks, list) else [])
    return Profile(
        name=str(user["username"]),
        emails=tuple(
            e.strip()
            for e in (emails if isinstance(emails, list) else [])
            if isinstance(e, str) and "@" in e and len(e) <= 254
        ),
        irc=irc,
        matrix=matrix,
    )
