"""The preference gateway's wire protocol: how a front end without database rights
asks fmn's service account to run preference calls for it.

The process a user runs over ssh holds no database credentials and no secrets. It
connects to the gateway's Unix socket; the gateway learns the caller's uid from the
kernel and runs :mod:`fmn_core.preferences` as that account and only that one (see
``fmn_daemon.gateway``). This module is the part both ends share, so a front end
imports only ``fmn_core``:

- **Framing**: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. A
  request may be at most :data:`MAX_REQUEST` bytes, a reply :data:`MAX_REPLY`; a
  longer frame is refused before it is read. JSON only — never pickle: the two ends
  trust each other with data, not with code.
- **Requests**: ``{"hello": true}`` (who am I, what may I choose from) or
  ``{"mode": "unit"|"trial", "calls": [{"op": …, "args": […], "kwargs": {…}}]}``.
  The calls run in order in one transaction, committed (``unit``) or rolled back
  (``trial``: the TUI's draft replay and preview). ``op`` must be in
  :data:`OPERATIONS`; the actor is never part of a request.
- **Replies**: ``{"ok": true, "results": […]}``, ``{"ok": false, "error": {"class":
  …, "message": …}}`` for a :class:`~fmn_core.errors.UserError` (re-raised on the
  client side as the same class with the same sentence), or ``{"ok": false,
  "internal": ref}`` for a bug, whose traceback stays in the gateway's log.
- **Values** (:func:`encode` / :func:`decode`): JSON scalars and lists as they are;
  everything else is an object with exactly one ``$`` key — ``$map`` (a dict),
  ``$tuple``, ``$dt`` (an aware datetime), ``$view`` (one of :data:`VIEW_TYPES`) —
  so data a user typed can never pass for a view. A confirmation code never leaves
  the gateway: :class:`~fmn_core.preferences.PendingConfirmation` is encoded without
  it (only the daemon sends codes, to the address being confirmed). Values nest at
  most :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import socket
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from . import errors
from .actions import ActionPlan
from .config import PushConfig
from .confirmation import ConfirmResult
from .errors import (
    GatewayInternalError,
    GatewayUnavailable,
    InvalidArgument,
    MalformedRequest,
    UserError,
)
from .explain import ContextExplanation, Explanation, FilterExplanation, RuleExplanation
from .templates import TemplateView
from .text import one_line
from .views import (
    ContextView,
    DestinationView,
    FilterView,
    NotificationView,
    PendingConfirmation,
    PreviewHit,
    RuleView,
)
from .waiting import Waiting

__all__ = [
    "DEFAULT_SOCKET",
    "MAX_CALLS",
    "MAX_DEPTH",
    "MAX_REPLY",
    "MAX_REQUEST",
    "OPERATIONS",
    "READ_OPERATIONS",
    "REPLY_TIMEOUT",
    "TRIAL_FORBIDDEN",
    "VIEW_TYPES",
    "GatewayClient",
    "PreferenceCall",
    "SessionInfo",
    "decode",
    "encode",
    "read_frame",
    "write_frame",
]

#: Where ``fmn-daemon gateway`` listens unless told otherwise (systemd's RuntimeDirectory).
DEFAULT_SOCKET: Final = "/run/fmn/gateway.sock"
#: The largest request the gateway reads (a draft of a few hundred steps fits easily).
MAX_REQUEST: Final = 256 * 1024
#: The largest reply a client reads (a 1000-message preview fits).
MAX_REPLY: Final = 16 * 1024 * 1024
#: Calls in one request.
MAX_CALLS: Final = 500
#: Seconds a client waits for a reply before it gives the connection up. The gateway
#: bounds its own waits (a locked database: seconds), so only a gateway that is hung
#: or stopped takes this long; a person is told so instead of waiting forever.
REPLY_TIMEOUT: Final = 120.0
#: How deep values may nest: the deepest reply (an explanation, down to a rule's
#: arguments) is 13 levels, counted as `decode` does; requests are shallower.
MAX_DEPTH: Final = 64

#: The preference calls a front end may ask for: what a user can see and change about
#: their own account. The daemon's own calls (sending codes) are not among them.
OPERATIONS: Final = frozenset(
    {
        "act_on_notification",
        "add_filter",
        "add_rule",
        "confirm",
        "explain",
        "first_contact",
        "get_context",
        "get_filter",
        "list_contexts",
        "list_filters",
        "list_templates",
        "move_filter",
        "mute",
        "pause_filter",
        "plan_action",
        "preview",
        "recent_notifications",
        "remove_destination",
        "remove_filter",
        "remove_rule",
        "rename_filter",
        "resend_confirmation",
        "revoke_action_links",
        "set_context_enabled",
        "set_destination",
        "set_daily_digest",
        "set_digest",
        "set_filter_active",
        "set_filter_delivery",
        "set_filter_oneshot",
        "set_filter_urgent",
        "set_quiet_hours",
        "set_rule_negated",
        "take_notices",
        "pending_notifications",
        "unmute",
        "use_template",
    }
)
#: The calls that only read: a trial made of nothing else takes no write lock, so a
#: screen can be shown while another change holds the database.
READ_OPERATIONS: Final = frozenset(
    {
        "explain",
        "get_context",
        "get_filter",
        "list_contexts",
        "list_filters",
        "list_templates",
        "pending_notifications",
        "plan_action",
        "preview",
        "recent_notifications",
    }
)
#: Calls that may not run in a rolled-back transaction: a trial ``confirm`` would test a
#: guess without counting it.
TRIAL_FORBIDDEN: Final = frozenset({"confirm"})

#: The dataclasses that may cross the socket, by name.
VIEW_TYPES: Final[Mapping[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        ActionPlan,
        ConfirmResult,
        ContextExplanation,
        ContextView,
        DestinationView,
        Explanation,
        FilterExplanation,
        FilterView,
        NotificationView,
        PendingConfirmation,
        PreviewHit,
        PushConfig,
        RuleExplanation,
        RuleView,
        TemplateView,
        Waiting,
    )
}

_LENGTH = struct.Struct(">I")
#: The ``UserError`` classes a reply may name (anything else arrives as UserError).
_ERROR_TYPES: Final[Mapping[str, type[UserError]]] = {
    name: cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, UserError)
}


@dataclass(frozen=True)
class PreferenceCall:
    """One preference call, by name: ``PreferenceCall("get_filter", ("email", "koji"))``."""

    op: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, function: Callable[..., Any], *args: Any, **kwargs: Any) -> PreferenceCall:
        """The call of a ``fmn_core.preferences`` function, without its session and actor."""
        if function.__name__ not in OPERATIONS:
            raise ValueError(f"{function.__name__} is not a gateway operation")
        return cls(function.__name__, args, kwargs)

    def to_wire(self) -> dict[str, Any]:
        """The call as the request lists it."""
        return {"op": self.op, "args": encode(list(self.args)), "kwargs": encode(dict(self.kwargs))}


@dataclass(frozen=True)
class SessionInfo:
    """What the gateway tells a client when it connects: who it serves, and the choices."""

    #: The account whose preferences this connection reads and changes.
    account: str
    #: The person acting (differs from ``account`` only for an administrator).
    actor: str
    contexts: tuple[str, ...]
    push: PushConfig

    @property
    def is_own(self) -> bool:
        """Whether the person at the keyboard owns the account (and so sees full addresses)."""
        return self.account == self.actor

    def to_wire(self) -> dict[str, Any]:
        """The hello reply's payload."""
        return {
            "account": self.account,
            "actor": self.actor,
            "contexts": list(self.contexts),
            "push": encode(self.push),
        }

    @classmethod
    def from_wire(cls, data: Any) -> SessionInfo:
        """Read a hello reply's payload."""
        try:
            push = decode(data["push"])
            info = cls(str(data["account"]), str(data["actor"]), tuple(data["contexts"]), push)
        except (KeyError, TypeError, MalformedRequest) as error:
            raise GatewayUnavailable("the gateway's greeting was malformed") from error
        if not isinstance(info.push, PushConfig):
            raise GatewayUnavailable("the gateway's greeting was malformed")
        return info


# --- values ---------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """A value as JSON-ready data (see the module docstring)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(item) for item in value]}
    if isinstance(value, Mapping):
        return {"$map": {str(key): encode(item) for key, item in value.items()}}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if VIEW_TYPES.get(name) is not type(value):
            raise TypeError(f"{name} may not cross the gateway")
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, PendingConfirmation):
            # The code goes to the address being confirmed, never to whoever asked.
            fields["code"] = None
        return {"$view": name, "fields": encode(fields)}
    raise TypeError(f"{type(value).__name__} may not cross the gateway")


def decode(data: Any) -> Any:
    """The value :func:`encode` made; ``MalformedRequest`` for anything else."""
    return _decode(data, 0)


def _decode(data: Any, depth: int) -> Any:
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if depth >= MAX_DEPTH:
        # Before Python's own limit: past it the request would end as a bug.
        raise MalformedRequest(f"values nested more than {MAX_DEPTH} levels deep")
    depth += 1
    if isinstance(data, list):
        return [_decode(item, depth) for item in data]
    if not isinstance(data, dict):
        raise MalformedRequest(f"a value of type {type(data).__name__}")
    if "$view" in data and set(data) == {"$view", "fields"}:
        cls = VIEW_TYPES.get(data["$view"]) if isinstance(data["$view"], str) else None
        fields = _decode(data["fields"], depth)
        if cls is None or not isinstance(fields, dict):
            raise MalformedRequest("an unknown kind of view")
        try:
            return cls(**fields)
        except TypeError as error:
            raise MalformedRequest(f"a {cls.__name__} with the wrong fields") from error
    if len(data) != 1:
        raise MalformedRequest("an object that is not a tagged value")
    ((tag, inner),) = data.items()
    if tag == "$map" and isinstance(inner, dict):
        return {key: _decode(item, depth) for key, item in inner.items()}
    if tag == "$tuple" and isinstance(inner, list):
        return tuple(_decode(item, depth) for item in inner)
    if tag == "$dt" and isinstance(inner, str):
        try:
            moment = dt.datetime.fromisoformat(inner)
        except ValueError as error:
            raise MalformedRequest("a malformed date") from error
        if moment.tzinfo is None:
            raise MalformedRequest("a date without a time zone")
        return moment
    raise MalformedRequest(f"an unknown tag {str(tag)[:20]!r}")


def error_to_wire(error: UserError) -> dict[str, Any]:
    """A user error as a reply names it: its class and its one sentence."""
    cls = next(c for c in type(error).__mro__ if c.__name__ in _ERROR_TYPES)
    return {
        "class": cls.__name__,
        "message": str(error),
        "argument": getattr(error, "argument", None),
    }


def error_from_wire(data: Any) -> UserError:
    """The user error a reply names, as an instance of the same class with the same sentence."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return MalformedRequest("an error without a message")
    cls = _ERROR_TYPES.get(str(data.get("class")), UserError)
    # The classes' constructors differ (``UnknownRule(name)`` builds its sentence); the
    # sentence is already built, so skip them and set what ``str()`` and handlers read.
    error = cls.__new__(cls)
    Exception.__init__(error, data["message"])
    if isinstance(error, errors.InvalidArgument):
        argument = data.get("argument")
        error.argument = argument if isinstance(argument, str) else None
    return error


# --- framing --------------------------------------------------------------------------


def write_frame(sock: socket.socket, payload: Any) -> None:
    """Send one JSON document.

    The whole frame is encoded before a byte is sent, so a payload that JSON or
    UTF-8 cannot carry (``TypeError``; ``ValueError``, such as the
    ``UnicodeEncodeError`` of a lone surrogate) raises with the stream untouched:
    the connection can still carry the next frame.
    """
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    sock.sendall(_LENGTH.pack(len(body)) + body)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, limit: int) -> Any:
    """Read one JSON document of at most ``limit`` bytes; None at a clean end of stream.

    Raises ``MalformedRequest`` for an oversized, truncated or unparsable frame.
    """
    header = _read_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (size,) = _LENGTH.unpack(header)
    if size > limit:
        raise MalformedRequest(f"a frame of {size} bytes (at most {limit})")
    body = _read_exactly(sock, size)
    if body is None:
        raise MalformedRequest("a truncated frame")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedRequest("a frame that is not JSON") from error


# --- client ---------------------------------------------------------------------------


class GatewayClient:
    """A front end's end of a gateway connection; safe to share between threads.

    A reply that does not come within ``reply_timeout`` seconds, or cannot be read,
    ends the connection: a late or partial reply left in the stream would otherwise
    be read as the answer to the next request.
    """

    def __init__(self, sock: socket.socket, *, reply_timeout: float = REPLY_TIMEOUT) -> None:
        sock.settimeout(reply_timeout)
        self._sock = sock
        self._lock = threading.Lock()
        self._reply_timeout = reply_timeout
        self._broken: str | None = None

    @classmethod
    def connect(
        cls, path: str, timeout: float = 5.0, *, reply_timeout: float = REPLY_TIMEOUT
    ) -> GatewayClient:
        """Connect to the gateway's socket; ``GatewayUnavailable`` says why not."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError as error:
            sock.close()
            raise GatewayUnavailable(
                f"fmn's preference service is not running (no socket at {path})"
            ) from error
        except PermissionError as error:
            sock.close()
            raise GatewayUnavailable(
                f"this account may not use fmn's preference service ({path}: permission denied)"
            ) from error
        except OSError as error:
            sock.close()
            raise GatewayUnavailable(
                f"fmn's preference service did not answer at {path} ({error.strerror or error})"
            ) from error
        return cls(sock, reply_timeout=reply_timeout)

    def _exchange(self, request: Mapping[str, Any]) -> Any:
        with self._lock:
            if self._broken is not None:
                raise GatewayUnavailable(f"{self._broken}, and the connection was closed")
            try:
                # A gateway that refused the connection before reading anything
                # left its reason waiting to be read.
                with contextlib.suppress(BrokenPipeError):
                    write_frame(self._sock, request)
                reply = read_frame(self._sock, MAX_REPLY)
            except UnicodeEncodeError:
                # From write_frame, before a byte was sent: the connection is still in
                # step. In-process, core refuses such text the same way.
                raise InvalidArgument(
                    "A value holds a character that is not text (a lone surrogate, such "
                    "as a byte that was not UTF-8 pasted into the terminal); remove it "
                    "and try again."
                ) from None
            except TimeoutError as error:
                raise self._break(
                    f"fmn's preference service did not answer within "
                    f"{self._reply_timeout:g} seconds"
                ) from error
            except MalformedRequest as error:
                raise self._break("fmn's preference service sent a reply fmn cannot read") from (
                    error
                )
            except OSError as error:
                raise self._break(
                    f"lost the connection to fmn's preference service ({error})"
                ) from error
        if reply is None:
            raise GatewayUnavailable("fmn's preference service closed the connection")
        if not isinstance(reply, dict):
            raise GatewayUnavailable("fmn's preference service sent a malformed reply")
        if reply.get("ok") is True:
            return reply
        if "error" in reply:
            raise error_from_wire(reply["error"])
        raise GatewayInternalError(one_line(reply.get("internal"), limit=16))

    def _break(self, reason: str) -> GatewayUnavailable:
        """Give the connection up (the stream is out of step): every later call says why."""
        self._broken = reason
        with contextlib.suppress(OSError):
            self._sock.close()
        return GatewayUnavailable(reason)

    def hello(self) -> SessionInfo:
        """Who this connection acts for, and the contexts and push rules to offer."""
        return SessionInfo.from_wire(self._exchange({"hello": True}).get("session"))

    def run(self, calls: Sequence[PreferenceCall], *, trial: bool = False) -> list[Any]:
        """Run ``calls`` in one transaction (rolled back with ``trial``); their results.

        A refused call raises its ``UserError`` here, as core raised it there.
        """
        reply = self._exchange(
            {"mode": "trial" if trial else "unit", "calls": [c.to_wire() for c in calls]}
        )
        results = decode(reply.get("results"))
        if not isinstance(results, list) or len(results) != len(calls):
            raise GatewayUnavailable("fmn's preference service sent a malformed reply")
        return results

    def close(self) -> None:
        """End the connection."""
        self._sock.close()
