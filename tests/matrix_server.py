"""A real Matrix homeserver (Synapse, on SQLite) on loopback, for tests of the Matrix context.

``synapse_homeserver()`` writes a configuration into a temporary directory
(loopback only, a free port, SQLite, no federation, a registration shared
secret, rate limits raised so the suite is not throttled), starts
``python -m synapse.app.homeserver`` and waits until
``/_matrix/client/versions`` answers. Accounts are made with the shared-secret
registration of Synapse's admin API, the way ``register_new_matrix_user`` does;
:class:`MatrixUser` is a person's client over the real client-server API
(accepting invites, reading rooms). Nothing here imitates a homeserver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The homeserver's name: user IDs are ``@name:localhost``.
SERVER_NAME = "localhost"
START_TIMEOUT_SECONDS = 90.0

#: Limits high enough that no test meets them (fmn's own pacing is what tests measure).
_RELAXED = {"per_second": 1000, "burst_count": 1000}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path, port: int, secret: str) -> dict[str, Any]:
    return {
        "server_name": SERVER_NAME,
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "registration_shared_secret": secret,
        "enable_registration": False,
        "report_stats": False,
        "enable_metrics": False,
        # No federation: no key servers, no other homeservers, nothing off loopback.
        "trusted_key_servers": [],
        "federation_domain_whitelist": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "rc_message": _RELAXED,
        "rc_registration": _RELAXED,
        "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
        "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
        "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
        "rc_admin_redaction": _RELAXED,
        "rc_3pid_validation": _RELAXED,
    }


def _request(
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read() or b"{}")
    assert isinstance(answer, dict)
    return answer


@dataclass
class MatrixUser:
    """A person's Matrix client: the real client-server API, as Element would use it."""

    base: str
    user_id: str
    access_token: str = field(repr=False)
    password: str = field(repr=False, default="")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One client-server API request as this user."""
        return _request(self.base, method, path, body, self.access_token)

    def sync(self, since: str | None = None, timeout_ms: int = 0) -> dict[str, Any]:
        """``/sync``: what happened since ``since`` (everything, the first time)."""
        # Synapse caches a /sync answer for a while per identical request; a filter
        # that excludes an event type nobody sends makes every request its own.
        nonce = {"room": {"timeline": {"not_types": [f"fmn.test.{secrets.token_hex(6)}"]}}}
        query = {"timeout": str(timeout_ms), "filter": json.dumps(nonce)}
        if since:
            query["since"] = since
        return self.call("GET", "/_matrix/client/v3/sync?" + urllib.parse.urlencode(query))

    def invites(self) -> dict[str, Any]:
        """Rooms this user is invited to: room id -> the invite state."""
        rooms = self.sync().get("rooms", {})
        invited = rooms.get("invite", {})
        assert isinstance(invited, dict)
        return invited

    def wait_for_invite(self, timeout: float = 15.0) -> str:
        """The id of a room this user is invited to, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            invited = self.invites()
            if invited:
                return next(iter(invited))
            time.sleep(0.1)
        raise AssertionError(f"{self.user_id} got no invite within {timeout}s")

    def join(self, room_id: str) -> None:
        """Accept an invite (join the room)."""
        quoted = urllib.parse.quote(room_id, safe="")
        self.call("POST", f"/_matrix/client/v3/rooms/{quoted}/join", {})

    def leave(self, room_id: str) -> None:
        """Leave a room."""
        quoted = urllib.parse.quote(room_id, safe="")
        self.call("POST", f"/_matrix/client/v3/rooms/{quoted}/leave", {})

    def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's ``m.room.message`` events, oldest first (``/messages``)."""
        quoted = urllib.parse.quote(room_id, safe="")
        query = urllib.parse.urlencode({"dir": "b", "limit": str(limit)})
        answer = self.call("GET", f"/_matrix/client/v3/rooms/{quoted}/messages?{query}")
        events = [e for e in answer.get("chunk", []) if e.get("type") == "m.room.message"]
        return list(reversed(events))

    def texts(self, room_id: str) -> list[str]:
        """The bodies of the room's messages, oldest first."""
        return [str(e["content"].get("body", "")) for e in self.messages(room_id)]

    def wait_for_texts(self, room_id: str, count: int, timeout: float = 15.0) -> list[str]:
        """The room's message bodies once there are at least ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            texts = self.texts(room_id)
            if len(texts) >= count or time.monotonic() > deadline:
                return texts
            time.sleep(0.1)

    def direct_rooms(self) -> dict[str, list[str]]:
        """This user's ``m.direct`` account data (user id -> DM room ids)."""
        quoted = urllib.parse.quote(self.user_id, safe="")
        try:
            answer = self.call("GET", f"/_matrix/client/v3/user/{quoted}/account_data/m.direct")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return {}
            raise
        return {k: list(v) for k, v in answer.items()}

    def joined_members(self, room_id: str) -> set[str]:
        """Who has joined the room."""
        quoted = urllib.parse.quote(room_id, safe="")
        answer = self.call("GET", f"/_matrix/client/v3/rooms/{quoted}/joined_members")
        return set(answer.get("joined", {}))


@dataclass
class Synapse:
    """A running homeserver: its client URL and the means to make accounts on it."""

    base_url: str
    directory: Path
    secret: str = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_in: float = 0.0

    def register(self, localpart: str, *, admin: bool = False) -> MatrixUser:
        """A new account, through the shared-secret registration of the admin API."""
        nonce = _request(self.base_url, "GET", "/_synapse/admin/v1/register")["nonce"]
        password = secrets.token_urlsafe(16)
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        # Synapse's order: nonce, user, password, admin flag, NUL-separated.
        mac.update(
            b"\x00".join(
                part.encode()
                for part in (nonce, localpart, password, "admin" if admin else "notadmin")
            )
        )
        digest = mac.hexdigest()
        answer = _request(
            self.base_url,
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": digest,
            },
        )
        return MatrixUser(self.base_url, answer["user_id"], answer["access_token"], password)

    def log(self) -> str:
        """The homeserver's output so far (for failure messages)."""
        path = self.directory / "homeserver.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _write_signing_key(path: Path) -> None:
    # Synapse's own key format ("ed25519 <version> <base64 seed>"), made with the
    # library Synapse uses, so no extra process runs just to generate keys.
    from signedjson.key import generate_signing_key, write_signing_keys

    with path.open("w") as file:
        write_signing_keys(file, [generate_signing_key("a_fmn")])


def _answers(base: str) -> bool:
    try:
        _request(base, "GET", "/_matrix/client/versions", timeout=2)
    except (OSError, ValueError):
        return False
    return True


@contextmanager
def synapse_homeserver(directory: Path) -> Iterator[Synapse]:
    """Start Synapse in ``directory`` and stop it afterwards (in ``finally``)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    secret = secrets.token_hex(16)
    config = directory / "homeserver.yaml"
    # JSON is YAML: no YAML writer is needed.
    config.write_text(json.dumps(_config(directory, port, secret), indent=2))
    _write_signing_key(directory / "signing.key")
    base = f"http://127.0.0.1:{port}"
    server = Synapse(base, directory, secret)
    began = time.monotonic()
    with (directory / "homeserver.out").open("wb") as out:
        environment = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        server.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            deadline = began + START_TIMEOUT_SECONDS
            while not _answers(base):
                if server.process.poll() is not None:
                    raise RuntimeError(
                        f"Synapse exited with {server.process.returncode}:\n{server.log()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Synapse did not answer within {START_TIMEOUT_SECONDS}s:\n{server.log()}"
                    )
                time.sleep(0.2)
            server.started_in = time.monotonic() - began
            yield server
        finally:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
                try:
                    server.process.wait(15)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait(5)
