"""The ``matrix`` context: direct messages from the operator's one Matrix bot.

:class:`MatrixClient` is a small client of the Matrix client-server API
(https://spec.matrix.org/latest/client-server-api/) over aiohttp, with only what
a notification bot needs:

- **one login, kept**: the configured ``access_token`` (checked once with
  ``/account/whoami``), or one ``m.login.password`` login whose token (and
  device) is reused for every message; a token the server stops accepting
  (``M_UNKNOWN_TOKEN``) is replaced by one new password login, on the same
  device;
- **one direct room per user**: found in the bot's ``m.direct`` account data
  (kept only while the user is joined or invited there), otherwise made with
  ``createRoom`` (``is_direct``, ``trusted_private_chat``, the user invited)
  and recorded in ``m.direct``, so any client of the bot's account sees it
  as the DM with that user; remembered in memory afterwards;
- **only the operator's homeserver**: every request goes to
  ``matrix.homeserver_url``; no ``.well-known`` discovery and no redirects, so a
  server's answer can never send the bot's credentials elsewhere;
- **bounded answers**: a body above :data:`MAX_ANSWER_BYTES` is refused unread; a
  body that is not JSON (or nests too deep to parse) and a ``retry_after_ms`` out of
  range (negative, NaN, above :data:`MAX_RETRY_AFTER_SECONDS`) are read as the
  homeserver's error, so the failure carries its status and reason.

:class:`MatrixTransport` is the daemon's transport for the context: it checks
the Matrix ID again, paces lines with the shared :class:`fmn_core.chat.Pacer`
(``matrix.lines_per_second``, ``matrix.burst``, across all users) and sends the
line as an ``m.text`` message. The daemon's senders decide what to send as for
every context (``delivery_policy.decide``: quiet hours, digests, the hourly rate limit),
and render chat lines with ``fmn_core.chat``, as the IRC bot does; they send the
context's lines in send slots of its own (``lines_per_second`` marks a paced
transport), so a line waiting for its turn holds up no other context.

Why not Apprise's Matrix plugin (2.3 can DM a user id): it is
synchronous (a thread per send), logs out when its object is collected unless
given a bare token, registers a new account on the homeserver when a password
login fails, reuses the first ``m.direct`` room without checking the user is
still in it, and reports failures as a boolean with log lines, where fmn needs
the server's reason for ``last_error``. matrix-nio would do, but brings a
second HTTP stack and end-to-end-encryption dependencies for six requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from fmn_core.chat import Pacer, fit_line
from fmn_core.config import MatrixConfig
from fmn_core.destinations import check_matrix_id, mask_address
from fmn_core.errors import InvalidDestination
from fmn_core.rendering import Rendered
from fmn_core.text import for_log

from . import TransportError, TransportRefused

__all__ = ["MAX_ANSWER_BYTES", "MatrixClient", "MatrixTransport"]

log = logging.getLogger(__name__)

#: The largest homeserver answer read; anything above is refused unread.
MAX_ANSWER_BYTES = 1024 * 1024
#: A rate-limited request (``M_LIMIT_EXCEEDED``) waits at most this long once.
MAX_RETRY_AFTER_SECONDS = 30.0
_API = "/_matrix/client/v3"
#: Memberships in which a direct room still reaches the user.
_REACHES = frozenset({"join", "invite"})


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]

    @property
    def errcode(self) -> str:
        return str(self.body.get("errcode") or "")

    def reason(self) -> str:
        text = str(self.body.get("error") or "")
        detail = ": ".join(part for part in (self.errcode, text) if part)
        return for_log(f"HTTP {self.status}" + (f" {detail}" if detail else ""), limit=300)


@dataclass
class _LoopState:
    """What must belong to one event loop (asyncio locks bind to their loop)."""

    loop: asyncio.AbstractEventLoop
    login: asyncio.Lock = field(default_factory=asyncio.Lock)
    pace: asyncio.Lock = field(default_factory=asyncio.Lock)
    rooms: dict[str, asyncio.Lock] = field(default_factory=dict)


class MatrixClient:
    """The operator's Matrix bot: one login, one direct room per user (module docstring)."""

    def __init__(self, config: MatrixConfig) -> None:
        if not config.configured:
            raise ValueError("the Matrix bot is not configured (matrix.user_id)")
        self.config = config
        self.base = config.homeserver_url.rstrip("/")
        self._token: str | None = config.access_token or None
        self._token_checked = False
        self._device_id: str | None = None
        #: user id -> the direct room the bot uses for them.
        self._rooms: dict[str, str] = {}
        self._state: _LoopState | None = None
        #: How many password logins this client made (one, unless the server dropped it).
        self.logins = 0

    def __repr__(self) -> str:
        return f"MatrixClient({self.base!r}, {self.config.user_id!r})"

    def state(self) -> _LoopState:
        """The locks of the running event loop (made anew when the loop changes)."""
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            self._state = _LoopState(loop)
        return self._state

    # -- requests -------------------------------------------------------------

    async def _request(
        self,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        auth: bool = True,
    ) -> _Answer:
        headers = {"Authorization": f"Bearer {self._token}"} if auth and self._token else {}
        url = f"{self.base}{_API}{path}"
        for _ in range(2):
            try:
                async with http.request(
                    method, url, json=body, headers=headers, allow_redirects=False
                ) as response:
                    raw = await _bounded_body(response)
                    status = response.status
            except TimeoutError:
                # Connected or not, the server kept fmn waiting: say so, not "unreachable".
                raise TransportError(
                    f"the Matrix homeserver {self.base} did not answer {_endpoint(path)} "
                    f"within {self.config.timeout_seconds:g} s (matrix.timeout_seconds)"
                ) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise TransportError(
                    f"the Matrix homeserver {self.base} cannot be reached "
                    f"({type(exc).__name__}: {for_log(str(exc), limit=200)})"
                ) from None
            if raw is None:
                raise TransportError(
                    f"the Matrix homeserver's answer is larger than {MAX_ANSWER_BYTES} bytes"
                )
            if 300 <= status < 400:
                raise TransportError(
                    f"the Matrix homeserver answered {_endpoint(path)} with a redirect "
                    f"(HTTP {status}); fmn does not follow redirects: set matrix.homeserver_url "
                    "to the client API's own address"
                )
            answer = _Answer(status, _json_object(raw))
            if status == 429 and answer.errcode == "M_LIMIT_EXCEEDED":
                wait = _retry_after(answer.body)
                if wait is not None:
                    await asyncio.sleep(wait)
                    continue
            return answer
        return answer

    async def _authorized(
        self,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
    ) -> _Answer:
        """A request with the bot's login; logs in again once if the token was dropped."""
        await self._ensure_login(http)
        used = self._token
        answer = await self._request(http, method, path, body)
        if answer.status == 401 and answer.errcode == "M_UNKNOWN_TOKEN" and self.config.password:
            async with self.state().login:
                # Another request may have logged in again already.
                if self._token == used:
                    self._token = None
                    self._token_checked = False
            await self._ensure_login(http)
            answer = await self._request(http, method, path, body)
        if answer.status == 401:
            raise TransportError(
                f"the Matrix homeserver refused the bot's login ({answer.reason()}); "
                "the operator must check matrix.access_token or matrix.password"
            )
        return answer

    async def _ensure_login(self, http: aiohttp.ClientSession) -> None:
        async with self.state().login:
            if self._token is not None and self._token_checked:
                return
            if self._token is None:
                await self._login(http)
            else:
                answer = await self._request(http, "GET", "/account/whoami")
                if answer.status != 200:
                    raise TransportError(
                        f"the Matrix homeserver did not accept the bot's access token "
                        f"({answer.reason()}); the operator must check matrix.access_token"
                    )
                self._check_identity(answer.body.get("user_id"))
            self._token_checked = True

    async def _login(self, http: aiohttp.ClientSession) -> None:
        body: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.config.user_id},
            "password": self.config.password,
            "initial_device_display_name": "fmn notifications",
        }
        if self._device_id:
            # The same device as before: no new device per login in the user's list.
            body["device_id"] = self._device_id
        answer = await self._request(http, "POST", "/login", body, auth=False)
        token = answer.body.get("access_token")
        if answer.status != 200 or not isinstance(token, str) or not token:
            raise TransportError(
                f"the Matrix bot could not log in ({answer.reason()}); the operator must "
                "check matrix.user_id and matrix.password"
            )
        self._check_identity(answer.body.get("user_id"))
        self._token = token
        device = answer.body.get("device_id")
        self._device_id = device if isinstance(device, str) else None
        self.logins += 1
        log.info("matrix: logged in to %s as %s", self.base, self.config.user_id)

    def _check_identity(self, user_id: object) -> None:
        if user_id != self.config.user_id:
            raise TransportError(
                f"the Matrix homeserver says the bot's login is {for_log(user_id, limit=80)}, "
                f"not matrix.user_id {self.config.user_id}"
            )

    # -- direct rooms ---------------------------------------------------------

    async def direct_room(self, http: aiohttp.ClientSession, user_id: str) -> str:
        """The direct room the bot uses for ``user_id``: remembered, found in
        ``m.direct`` (still reaching the user), or made now."""
        state = self.state()
        lock = state.rooms.setdefault(user_id, asyncio.Lock())
        async with lock:
            room = self._rooms.get(user_id)
            if room is not None:
                return room
            direct = await self._direct_map(http)
            for candidate in direct.get(user_id, []):
                if await self._membership(http, candidate, user_id) in _REACHES:
                    self._rooms[user_id] = candidate
                    return candidate
            room = await self._create_room(http, user_id)
            self._rooms[user_id] = room
            return room

    def forget_room(self, user_id: str) -> None:
        """Stop using the remembered room of ``user_id`` (the bot can no longer post there)."""
        self._rooms.pop(user_id, None)

    def _direct_path(self) -> str:
        return f"/user/{quote(self.config.user_id, safe='')}/account_data/m.direct"

    async def _direct_map(self, http: aiohttp.ClientSession) -> dict[str, list[str]]:
        answer = await self._authorized(http, "GET", self._direct_path())
        if answer.status == 404:
            return {}
        if answer.status != 200:
            raise TransportError(f"cannot read the bot's direct rooms ({answer.reason()})")
        return {
            user: [r for r in rooms if isinstance(r, str)]
            for user, rooms in answer.body.items()
            if isinstance(user, str) and isinstance(rooms, list)
        }

    async def _membership(self, http: aiohttp.ClientSession, room: str, user_id: str) -> str:
        path = f"/rooms/{quote(room, safe='')}/state/m.room.member/{quote(user_id, safe='')}"
        answer = await self._authorized(http, "GET", path)
        if answer.status != 200:
            # No such member, or the bot is no longer in the room: not usable.
            return ""
        return str(answer.body.get("membership") or "")

    async def _create_room(self, http: aiohttp.ClientSession, user_id: str) -> str:
        masked = mask_address("matrix", user_id)
        answer = await self._authorized(
            http,
            "POST",
            "/createRoom",
            {"is_direct": True, "preset": "trusted_private_chat", "invite": [user_id]},
        )
        room = answer.body.get("room_id")
        if answer.status != 200 or not isinstance(room, str) or not room:
            raise TransportError(
                f"the Matrix homeserver did not make a direct room with {masked} "
                f"({answer.reason()})"
            )
        # m.direct is read again just before writing, so a room another client of
        # the bot's account recorded meanwhile is kept.
        direct = await self._direct_map(http)
        direct[user_id] = [room, *(r for r in direct.get(user_id, []) if r != room)]
        stored = await self._authorized(http, "PUT", self._direct_path(), dict(direct))
        if stored.status != 200:
            log.warning(
                "matrix: made a direct room with %s but could not record it in m.direct (%s)",
                masked,
                stored.reason(),
            )
        log.info("matrix: made a direct room with %s", masked)
        return room

    # -- sending --------------------------------------------------------------

    async def send_text(
        self, user_id: str, text: str, *, pace: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Send ``text`` to ``user_id`` in their direct room; ``TransportError`` if not taken.

        ``pace`` is awaited just before the message goes (after the room is known),
        so a flood limit counts messages, not the requests that find a room.
        """
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        # One short-lived HTTP session per message: the login it uses is kept, and
        # no connection outlives the event loop that opened it.
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
            transaction = uuid.uuid4().hex
            for attempt in range(2):
                room = await self.direct_room(http, user_id)
                if pace is not None:
                    await pace()
                path = f"/rooms/{quote(room, safe='')}/send/m.room.message/{transaction}"
                answer = await self._authorized(
                    http, "PUT", path, {"msgtype": "m.text", "body": text}
                )
                if answer.status == 200 and isinstance(answer.body.get("event_id"), str):
                    return
                if answer.status == 200:
                    # Only an event ID says the message is in the room: a 200 without one
                    # (a proxy's page, an empty answer) took nothing that fmn can tell.
                    raise TransportError(
                        f"the Matrix homeserver answered the message for "
                        f"{mask_address('matrix', user_id)} without an event ID "
                        f"({answer.reason()}); is matrix.homeserver_url the client API?"
                    )
                if answer.status == 403 and attempt == 0:
                    # The bot left or was removed from that room: find or make another.
                    self.forget_room(user_id)
                    continue
                raise TransportError(
                    f"the Matrix homeserver did not take the message for "
                    f"{mask_address('matrix', user_id)} ({answer.reason()})"
                )


class MatrixTransport:
    """The ``matrix`` context's transport: paced lines through the :class:`MatrixClient`."""

    def __init__(
        self,
        config: MatrixConfig,
        *,
        client: MatrixClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client if client is not None else MatrixClient(config)
        self.pacer = Pacer(config.lines_per_second, config.burst, clock=clock)

    @property
    def lines_per_second(self) -> float:
        """The pace of lines, across all users (``matrix.lines_per_second``); the
        daemon's senders bound how many lines they claim ahead by it."""
        return self.config.lines_per_second

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Send ``rendered`` (a chat line, or a confirmation code) to the Matrix ID
        ``destination``."""
        try:
            user_id = check_matrix_id(destination)
        except InvalidDestination as exc:
            raise TransportRefused(str(exc)) from None
        if user_id == self.config.user_id:
            raise TransportRefused("this is the fmn bot's own Matrix ID; give yours")
        # A confirmation keeps its few lines (the code, what to do with it); a
        # notification is the one chat line the daemon rendered.
        text = rendered.text.strip() if rendered.confirmation else fit_line(rendered.short)
        await self.client.send_text(user_id, text, pace=self._pace)
        log.debug("matrix: sent a line to %s", mask_address("matrix", user_id))

    async def _pace(self) -> None:
        async with self.client.state().pace:
            delay = self.pacer.delay()
            if delay > 0:
                await asyncio.sleep(delay)
            self.pacer.take()


async def _bounded_body(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, read in chunks; ``None`` as soon as it passes :data:`MAX_ANSWER_BYTES`."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(path: str) -> str:
    """The API a request went to, for messages: ``/rooms/…/send/m.room.message/…``
    (room, user and transaction IDs left out)."""
    parts = path.split("?", 1)[0].split("/")
    return "/".join("…" if "%" in part or len(part) == 32 else part for part in parts)


def _json_object(raw: bytes) -> dict[str, Any]:
    """The answer's JSON object; ``{}`` for an empty or non-object body."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {"error": "the answer is not JSON"}
    return value if isinstance(value, dict) else {"error": "the answer is not a JSON object"}


def _retry_after(body: dict[str, Any]) -> float | None:
    """The wait a rate-limited answer asks for, in seconds; ``None`` unless it is a number
    from 0 to :data:`MAX_RETRY_AFTER_SECONDS` (NaN fails the range check, and an integer
    too large for a float is never converted)."""
    value = body.get("retry_after_ms")
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value <= MAX_RETRY_AFTER_SECONDS * 1000
    ):
        return value / 1000
    return None
