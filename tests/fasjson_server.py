"""A FASJSON-compatible HTTP server on loopback, for tests of the real client code.

It answers FASJSON v1's endpoints the way fasjson does (flask-restx marshalling:
every user field present, ``null`` when unset; the ``{"result": ..., "page":
{...}}`` envelope; ``page_size``/``page_number`` paging with a 40-item cap on
searches; ``ircnick`` a case-insensitive substring search unless
``ircnick__exact``; private profiles without their nicks; 404 ``{"message",
"name"}`` for unknown users and groups). Tests change ``users`` and ``groups``
while it runs, the way Fedora Accounts changes under fmn.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The fields FASJSON's user model marshals (fasjson/lib/ldap/models.py, UserModel).
USER_FIELDS = (
    "username",
    "surname",
    "givenname",
    "human_name",
    "emails",
    "ircnicks",
    "locale",
    "timezone",
    "gpgkeyids",
    "sshpubkeys",
    "certificates",
    "creation",
    "is_private",
    "locked",
    "github_username",
    "gitlab_username",
    "pronouns",
    "rhbzemail",
    "website",
    "rssurl",
    "websites",
    "rssurls",
)
PRIVATE_FIELDS = (
    "human_name",
    "surname",
    "givenname",
    "ircnicks",
    "locale",
    "timezone",
    "gpgkeyids",
    "github_username",
    "gitlab_username",
    "pronouns",
    "website",
    "rssurl",
    "websites",
    "rssurls",
)


def fas_user(
    username: str,
    *,
    emails: list[str] | None = None,
    ircnicks: list[str] | None = None,
    private: bool = False,
    locked: bool = False,
) -> dict[str, Any]:
    """A user record as FASJSON stores it (what an LDAP entry converts to)."""
    return {
        "username": username,
        "surname": username.title(),
        "givenname": "Test",
        "human_name": f"Test {username.title()}",
        "emails": emails if emails is not None else [f"{username}@fedoraproject.org"],
        "ircnicks": ircnicks,
        "locale": "en-US",
        "timezone": "UTC",
        "gpgkeyids": None,
        "creation": "2020-06-01T10:20:30",
        "is_private": private,
        "locked": locked,
        "github_username": None,
        "pronouns": ["they / them"],
    }


@dataclass
class FasjsonServer:
    """The server's data (``users`` by name, ``groups`` name -> members) and what it saw."""

    url: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    #: When set, every request gets this status (to play an outage).
    failing: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, username: str, **kwargs: Any) -> None:
        with self.lock:
            self.users[username] = fas_user(username, **kwargs)

    def set_groups(self, group: str, members: list[str]) -> None:
        with self.lock:
            self.groups[group] = list(members)

    def paths(self, prefix: str = "") -> list[str]:
        """The request paths (without query) seen so far, starting with ``prefix``."""
        return [r.split("?", 1)[0] for r in self.requests if r.startswith(prefix)]

    # -- the API ---------------------------------------------------------------------

    def answer(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        parsed = urllib.parse.urlsplit(raw_path)
        query = urllib.parse.parse_qs(parsed.query)
        parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
        if parts[:1] != ["v1"]:
            return 404, {"message": "The requested URL was not found on the server."}
        parts = parts[1:]
        with self.lock:
            if len(parts) == 2 and parts[0] == "users":
                user = self.users.get(parts[1])
                # FASJSON's LDAP filter leaves locked accounts out: they are "not found".
                if user is None or user.get("locked"):
                    return 404, {"message": "User not found", "name": parts[1]}
                return 200, {"result": self._marshal(user)}
            if len(parts) == 3 and parts[0] == "users" and parts[2] == "groups":
                if parts[1] not in self.users or self.users[parts[1]].get("locked"):
                    return 404, {"message": "User does not exist", "name": parts[1]}
                names = sorted(g for g, members in self.groups.items() if parts[1] in members)
                return self._paged(
                    [{"groupname": g, "uri": f"{self.url}/v1/groups/{g}/"} for g in names], query
                )
            if len(parts) == 3 and parts[0] == "groups" and parts[2] == "members":
                if parts[1] not in self.groups:
                    return 404, {"message": "Group not found", "groupname": parts[1]}
                return self._paged(
                    [
                        {"username": u, "uri": f"{self.url}/v1/users/{u}/"}
                        for u in sorted(self.groups[parts[1]])
                    ],
                    query,
                )
            if parts == ["search", "users"]:
                return self._search(query)
        return 404, {"message": "The requested URL was not found on the server."}

    def _marshal(self, user: dict[str, Any]) -> dict[str, Any]:
        shown = {name: user.get(name) for name in USER_FIELDS}
        shown["locked"] = bool(user.get("locked"))
        if shown.get("is_private"):
            for name in PRIVATE_FIELDS:
                shown.pop(name, None)
        shown["uri"] = f"{self.url}/v1/users/{user['username']}/"
        return shown

    def _search(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        size = int(query.get("page_size", ["40"])[0])
        if size > 40 or size == 0:
            return 400, {"message": "Page size must be between 1 and 40 when searching."}
        if "ircnick" in query:
            term = query["ircnick"][0]
            if len(term) < 3:
                return 400, {"message": "Search term must be at least 3 characters long."}
            found = [
                u
                for u in self.users.values()
                if any(term.lower() in n.lower() for n in u.get("ircnicks") or [])
            ]
        elif "ircnick__exact" in query:
            term = query["ircnick__exact"][0]
            found = [
                u
                for u in self.users.values()
                if any(term.lower() == n.lower() for n in u.get("ircnicks") or [])
            ]
        else:
            return 400, {"message": "At least one search term must be provided."}
        found = [u for u in found if not u.get("locked")]
        return self._paged(
            [self._marshal(u) for u in sorted(found, key=lambda u: u["username"])], query
        )

    def _paged(self, items: list[Any], query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        size_given = query.get("page_size")
        if not size_given:
            return 200, {"result": items}
        size = int(size_given[0])
        number = int(query.get("page_number", ["1"])[0])
        total_pages = max(1, math.ceil(len(items) / size))
        page: dict[str, Any] = {
            "total_results": len(items),
            "page_size": size,
            "page_number": number,
            "total_pages": total_pages,
        }
        if number < total_pages:
            page["next_page"] = f"{self.url}?page_size={size}&page_number={number + 1}"
        return 200, {"result": items[(number - 1) * size : number * size], "page": page}


def _handler(state: FasjsonServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if state.failing is not None:
                status, body = state.failing, {"message": "Service unavailable"}
            else:
                status, body = state.answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@contextmanager
def running_fasjson() -> Iterator[FasjsonServer]:
    """A FASJSON-compatible server in a thread on a free loopback port, stopped in ``finally``."""
    state = FasjsonServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    port = int(server.server_address[1])
    state.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fasjson", daemon=True
    )
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
